"""torch.distributed for the pretraining loop: process group set-up and this step's shard of the batch.

Every rank builds the same epoch plan (a function of seed, epoch and the score table, which is kept
identical on all ranks), so every rank also knows, without communicating, how many samples each rank
trains in each step: the step's global batch is cut into ``world_size`` contiguous, near-equal shards.
Gathers pad each shard to the largest one and cut the padding off again, so unequal shards work with
collectives that need equal shapes, and nothing is read back to the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from lightly.utils.dist import gather as differentiable_gather


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def rng_states(ctx: DistContext, device: torch.device) -> dict:
    """Every rank's generator states (collective under DDP), so that each rank resumes its own stream."""
    cuda = device.type == "cuda"
    states = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if cuda else None}
    gathered = [states]
    if ctx.enabled:
        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, states)
    return {"torch": [g["torch"] for g in gathered], "cuda": [g["cuda"] for g in gathered] if cuda else []}


def restore_rng(saved: dict, saved_world_size: int, ctx: DistContext, device: torch.device, reseed: int) -> None:
    """This rank's generators as :func:`rng_states` saved them; resumed with another process count (plans and
    weights carry over, augmentation streams cannot) each rank is seeded with ``reseed + 1_000_003 * rank`` instead."""
    if saved_world_size == ctx.world_size:
        torch.set_rng_state(saved["torch"][ctx.rank])
        if device.type == "cuda" and saved["cuda"]:
            torch.cuda.set_rng_state(saved["cuda"][ctx.rank], device)
    else:
        torch.manual_seed(reseed + 1_000_003 * ctx.rank)


def init_distributed(device_name: str) -> DistContext:
    """Join the process group torchrun describes in the environment; a plain run is world size 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        backend, timeout = "nccl" if use_cuda else "gloo", timedelta(minutes=30)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            # torchrun's store outlives the workers it restarts (--max-restarts): in it a restarted group would read
            # the addresses its dead predecessors published and fail to connect (torch 2.14 with gloo; pytorch#167288
            # with NCCL). Each attempt gets keys of its own.
            store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
            dist.init_process_group(
                backend,
                store=dist.PrefixStore(f"ssl_emp/attempt_{restart}", store),
                rank=rank,
                world_size=world_size,
                timeout=timeout,
            )
    return DistContext(rank, world_size, local_rank)


@dataclass(frozen=True)
class Shard:
    """This rank's part of one step's global batch: ``sizes[r]`` samples on rank r, in rank order."""

    sizes: tuple[int, ...]
    rank: int

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def local(self) -> slice:
        return slice(self.offset, self.offset + self.sizes[self.rank])

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        pad = max(self.sizes) - x.shape[0]
        return torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x

    def _cut(self, parts) -> torch.Tensor:
        return torch.cat([part[:n] for part, n in zip(parts, self.sizes)])

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """All ranks' rows in global batch order, differentiable: gradients flow back to the owning rank."""
        return self._cut(differentiable_gather(self._padded(x).contiguous()))

    @torch.no_grad()
    def gather_detached(self, x: torch.Tensor) -> torch.Tensor:
        padded = self._padded(x.detach()).contiguous()
        parts = [torch.empty_like(padded) for _ in self.sizes]
        dist.all_gather(parts, padded)
        return self._cut(parts)

    @torch.no_grad()
    def shuffle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deal the global batch's rows out afresh: one permutation, drawn on rank 0 and broadcast, is applied to
        the gathered rows and this rank takes its shard of the result. Returns those rows and the permutation
        (``rows[j]`` of the shuffled batch is global row ``permutation[j]``), for :meth:`unshuffle`.

        lightly's ``batch_shuffle_distributed`` does the same for equal shards only; a pruned epoch's batches
        split into shards that differ by a row, hence this version on the padded gather.
        """
        everything = self.gather_detached(x)
        permutation = torch.randperm(self.total, device=x.device)
        dist.broadcast(permutation, src=0)
        return everything[permutation[self.local]], permutation

    @torch.no_grad()
    def unshuffle(self, y: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``y`` (computed on :meth:`shuffle`'s rows), back in global batch order."""
        return self.gather_detached(y)[permutation.argsort()]


def split_sizes(total: int, world_size: int) -> tuple[int, ...]:
    """Shard sizes of ``tensor_split(world_size)`` on ``total`` rows, without touching the tensor."""
    base, extra = divmod(total, world_size)
    return tuple(base + (1 if r < extra else 0) for r in range(world_size))


def step_shard(size: int, ctx: DistContext) -> "Shard | None":
    """This rank's shard of a global batch of ``size`` samples; None outside DDP."""
    return Shard(split_sizes(size, ctx.world_size), ctx.rank) if ctx.enabled else None


def agreed_shard(local: int, ctx: DistContext, device: torch.device) -> "Shard":
    """The step's shards when their sizes are not known in advance (files may have been skipped while reading):
    one small all-gather and host read, only then."""
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(counts, torch.tensor([local], device=device))
    return Shard(tuple(int(c) for c in counts), ctx.rank)


def all_finite(value: torch.Tensor, ctx: DistContext) -> bool:
    """Whether ``value`` is finite on every rank: one host sync (and under DDP one all-reduce)."""
    finite = torch.isfinite(value.detach()).all().float()
    if ctx.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())
