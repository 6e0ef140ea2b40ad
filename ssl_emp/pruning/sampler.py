"""The pruner as a DataLoader sampler: each epoch's plan, this rank's share of it under DDP; as single indices
(:class:`PrunedSampler`) or as near-equal batches (:class:`PrunedBatchSampler`, what a training loop wants)."""

from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ssl_emp.pruning.plan import near_equal_batches


class PrunedSampler(Sampler[int]):
    """Yields the indices of each epoch's plan in its (seeded, shuffled) order.

    Like ``DistributedSampler``, call ``set_epoch(epoch)`` before each epoch (without it, each full pass
    moves on to the next epoch). Every rank builds the same plan, since ``Pruner.step`` keeps the score
    tables identical, and takes every ``num_replicas``-th index from its rank on. The plan is cut to a
    multiple of ``num_replicas`` (at most ``num_replicas - 1`` planned samples wait for a later epoch), so
    all ranks step with equal batch sizes.
    """

    def __init__(self, pruner, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        distributed = dist.is_available() and dist.is_initialized()
        self.pruner = pruner
        self.num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not among {self.num_replicas} replicas")
        self.epoch = 0
        self._planned: Optional[tuple[int, list[int]]] = None  # (epoch, this rank's indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> list[int]:
        if self._planned is None or self._planned[0] != self.epoch:
            indices = self.pruner.plan(self.epoch).indices
            usable = len(indices) - len(indices) % self.num_replicas
            self._planned = (self.epoch, indices[:usable][self.rank :: self.num_replicas].tolist())
        return self._planned[1]

    def __iter__(self) -> Iterator[int]:
        yield from self._shard()
        self.epoch += 1

    def __len__(self) -> int:
        size = self.pruner.planned_size(self.epoch)
        if size is None or (self._planned is not None and self._planned[0] == self.epoch):
            return len(self._shard())
        return size // self.num_replicas


class PrunedBatchSampler(Sampler[list[int]]):
    """Yields each epoch's plan (this rank's share under DDP) as near-equal batches of about ``batch_size``:
    the batch count nearest ``len / batch_size``, sizes differing by at most one, as our trainer cuts its
    epochs. A plain ``DataLoader(batch_size=...)`` over a pruned plan ends each epoch with whatever is left,
    down to a batch of one sample (which BatchNorm refuses to train on).

    ``batch_size`` is per rank, like a DataLoader's. Every rank's share has the same length, so every rank
    steps with the same batch sizes, as ``Pruner.step`` needs. ``set_epoch`` as for :class:`PrunedSampler`.
    """

    def __init__(self, pruner, batch_size: int, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
        self.sampler = PrunedSampler(pruner, num_replicas, rank)
        self.batch_size = batch_size

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in near_equal_batches(torch.tensor(self.sampler._shard(), dtype=torch.long), self.batch_size):
            yield batch.tolist()
        self.sampler.epoch += 1

    def __len__(self) -> int:
        share = len(self.sampler)
        return 0 if share == 0 else max(1, round(share / self.batch_size))


class WithIndex(Dataset):
    """``dataset[i]`` as ``(i, dataset[i])``: the step needs to know which samples it trained on."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]
