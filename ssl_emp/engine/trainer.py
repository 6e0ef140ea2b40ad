"""The pretraining loop: epochs over batches of indices into an in-memory image bank (or, with
``data.in_memory=false``, into a folder of images streamed from disk)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ssl_emp.config import PretrainConfig
from ssl_emp.data import ImageBank, ImageFolderStream, UnreadableImageError, load_bank
from ssl_emp.data.augment import TwoViews
from ssl_emp.device import autocast, resolve_device
from ssl_emp.distributed import DistContext, Shard, init_distributed, split_sizes
from ssl_emp.engine.checkpoint import FORMAT, CheckpointError, atomic_save, load_checkpoint
from ssl_emp.engine.monitor import KNNMonitor
from ssl_emp.engine.optim import build_optimizer, learning_rate
from ssl_emp.methods import ContrastiveMethod, MethodOutput, build_method
from ssl_emp.methods.queue import ddp_ignored_buffer_names
from ssl_emp.pruning import EpochPlan, Pruner, SampleStats, achieved_rate
from ssl_emp.pruning.selectors.base import budget
from ssl_emp.tracking import NullTracker, Tracker


class RunDirError(RuntimeError):
    """The run directory clashes with what was asked (exists without resume, or missing with it)."""


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    epochs_done: int
    global_step: int
    final_loss: float
    seconds: float
    images_per_second: float
    requested_rate: Optional[float]  # None under InfoBatch's published rule, which sets no target rate
    achieved_rate: float
    sample_forwards: int
    full_data_forwards: int
    is_main: bool = True  # False on DDP ranks other than 0, which print nothing
    history: list[dict] = field(default_factory=list)


def _nothing(_: str) -> None:
    pass


def prepare_run_dir(cfg: PretrainConfig, recipe: str, ctx: DistContext = DistContext()) -> Path:
    """Check the run directory against ``run.resume`` on every rank (so all fail alike); rank 0 creates it."""
    if ctx.enabled and not cfg.run.name:
        raise RunDirError("Under torchrun set run.name: ranks would otherwise each pick a timestamped directory.")
    name = cfg.run.name or f"{recipe}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run.out_dir) / name
    has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file()
    if cfg.run.resume and not has_checkpoint:
        raise RunDirError(f"run.resume=true but '{run_dir}' has no checkpoints/last.pt to resume from.")
    if not cfg.run.resume and has_checkpoint:
        raise RunDirError(f"Run directory '{run_dir}' already holds a run. Resume it with run.resume=true, "
                          "or pick another run.name.")
    ctx.barrier()  # every rank has looked before rank 0 writes anything
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    return run_dir


# Settings a run cannot change when it resumes: they fix the shapes of the saved state or the dataset it indexes.
RESUME_FIXED = ("data.name", "data.subset", "data.image_size", "model", "method.name", "method.queue_size")


def check_resume_compatible(saved: dict, cfg: PretrainConfig, run_dir: Path) -> None:
    current = cfg.model_dump()

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    before, now = dict(flat(saved)), dict(flat(current))
    changed = [f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in sorted(now)
               if any(key == fixed or key.startswith(fixed + ".") for fixed in RESUME_FIXED)
               and before.get(key) != now.get(key)]
    if changed:
        raise RunDirError(f"Cannot resume '{run_dir}' with this config: it changes settings fixed for the life of a "
                          f"run ({'; '.join(changed)}). Resume with the run's own config.yaml, or start a new run.")


def schedule_shift(saved: PretrainConfig, cfg: PretrainConfig, epoch: int, num_samples: int) -> list[str]:
    """What changes, from ``epoch`` on, when a run saved with ``saved`` resumes with another ``train.epochs``:
    the learning rate, the pruning schedule's annealing window and per-epoch rate are functions of it."""
    before, after = saved.train.epochs, cfg.train.epochs
    shifts = [f"the learning rate at epoch {epoch} goes from {learning_rate(saved.optim, epoch, before):.4g} to "
              f"{learning_rate(cfg.optim, epoch, after):.4g} (cosine over {after} epochs, not {before})"]
    old = Pruner(num_samples, before, seed=cfg.train.seed, **saved.pruning.model_dump())
    new = Pruner(num_samples, after, seed=cfg.train.seed, **cfg.pruning.model_dump())

    def window(pruner: Pruner, epochs: int) -> str:
        first = pruner.first_annealed_epoch + 1
        return f"{first}-{epochs}" if first <= epochs else "none"

    if old.active and window(old, before) != window(new, after):
        shifts.append(f"the full-data annealing epochs move from {window(old, before)} to {window(new, after)}")
    if old.active and not old.published_rule:
        shifts.append(f"each pruned epoch skips {new.epoch_rate:.3f} of the data, not {old.epoch_rate:.3f}, so "
                      f"that the whole run skips pruning.rate={cfg.pruning.rate}")
    return shifts


def check_resume_epochs(saved: dict, cfg: PretrainConfig, run_dir: Path, epoch: int, num_samples: int) -> list[str]:
    """Refuse a new ``train.epochs`` on resume unless ``run.extend=true``; returns what it shifts (to print)."""
    if saved["train"]["epochs"] == cfg.train.epochs:
        return []
    saved_cfg = cfg.model_copy(deep=True)  # this run's settings but the old epoch count: the shift it alone makes
    saved_cfg.train.epochs = saved["train"]["epochs"]
    shifts = schedule_shift(saved_cfg, cfg, epoch, num_samples)
    if not cfg.run.extend:
        raise RunDirError(
            f"Cannot resume '{run_dir}' with train.epochs={cfg.train.epochs}: it was started with "
            f"train.epochs={saved_cfg.train.epochs}, and the schedules depend on it: " + "; ".join(shifts)
            + f". Pass run.extend=true to accept that, or resume with train.epochs={saved_cfg.train.epochs}.")
    return shifts


def sample_stats(output: MethodOutput) -> SampleStats:
    """What the pruning engine reads from a method's outputs."""
    return SampleStats(output.per_sample_loss, output.agreement, output.softmax_entropy, output.positive_prob,
                       output.embedding)


def gather_stats(stats: SampleStats, shard: Shard) -> SampleStats:
    """The whole global batch's per-sample statistics on every rank: one all-gather of their packed block."""
    return stats.from_block(shard.gather_detached(stats.to_block()))


def check_fits_the_data(cfg: PretrainConfig, num_images: int, pruner: Pruner) -> None:
    """Settings valid one by one that make no sense for this dataset."""
    # MoCo enqueues two keys per sample (one per view), so the queue spans queue_size / 2 samples.
    if cfg.method.name == "moco" and cfg.method.queue_size // 2 >= num_images:
        raise ValueError(f"method.queue_size={cfg.method.queue_size} holds the keys of {cfg.method.queue_size // 2} "
                         f"samples (two views each), not fewer than the dataset's {num_images} images: each sample's "
                         f"own earlier keys would be among its negatives. Use a queue below {2 * num_images}.")
    if not cfg.data.in_memory and cfg.monitor.every and (cfg.monitor.train_subset is None
                                                         or cfg.monitor.test_subset is None):
        raise ValueError("The online kNN monitor holds its images in memory; with data.in_memory=false set "
                         "monitor.train_subset and monitor.test_subset (e.g. 10000 and 2000), or monitor.every=0.")
    if pruner.active and not pruner.published_rule:
        # The user's notion of what is left: (1 - rate) of the data. (Pruned epochs keep a little less, making up
        # for the full warm-up and annealing epochs; there the batch is at most one epoch.)
        kept = budget(num_images, pruner.cfg.rate)
        if cfg.train.batch_size > kept:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is larger than the {kept} images left per "
                             f"epoch at pruning.rate={cfg.pruning.rate} ({num_images} images); lower the batch size "
                             "or the rate.")


class Pretrainer:
    """Owns the model, optimizer and data of one pretraining run."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, train_bank: Optional[ImageBank] = None,
                 ctx: Optional[DistContext] = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.ctx = ctx or DistContext()
        self.device = resolve_device(cfg.train.device, self.ctx.local_rank)
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank

        if train_bank is not None:
            bank = train_bank
        elif not cfg.data.in_memory:
            bank = ImageFolderStream(cfg.data.root, cfg.data.image_size, cfg.data.subset, cfg.data.skip_unreadable)
        else:
            bank = load_bank(cfg.data.name, cfg.data.root, "train", cfg.data.image_size, cfg.data.subset)
        self.streaming = isinstance(bank, ImageFolderStream)
        self.unreadable: set[int] = set()  # streamed files skipped as unreadable (data.skip_unreadable)
        if cfg.train.batch_size > len(bank):
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is larger than the dataset "
                             f"({len(bank)} images); lower it.")
        if cfg.train.batch_size < 2 * self.ctx.world_size:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is the global batch; with "
                             f"{self.ctx.world_size} processes each needs at least 2 samples.")
        self.mean, self.std = bank.channel_stats()
        self.bank = bank.to(self.device if cfg.data.bank_device == "auto" else "cpu")
        self.views = TwoViews(cfg.augment, bank.image_size, bank.channels, self.mean, self.std).to(self.device)

        self.model: ContrastiveMethod = build_method(cfg.method, cfg.model, bank.channels).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if (self.cuda and cfg.train.channels_last) else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.forward = self.model
        if self.ctx.enabled:
            if cfg.train.sync_batchnorm:
                if not self.cuda:
                    raise ValueError("train.sync_batchnorm=true needs CUDA: PyTorch's SyncBatchNorm has no CPU "
                                     "implementation. Leave it off for CPU (gloo) runs.")
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            # MoCo's queue is identical on every rank by construction; DDP must not broadcast it each step.
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.model, ddp_ignored_buffer_names(self.model))
            self.forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.cuda else None)
            # Augmentations differ per rank (as with per-rank data loaders); weights were seeded identically above.
            torch.manual_seed(cfg.train.seed + 1_000_003 * self.ctx.rank)
        if cfg.train.compile:
            self.forward = torch.compile(self.forward)
        self.optimizer = build_optimizer(self.model, cfg.optim)

        self.pruner = Pruner(len(self.bank), cfg.train.epochs, seed=cfg.train.seed, device=self.device,
                             **cfg.pruning.model_dump())
        check_fits_the_data(cfg, len(bank), self.pruner)
        self.monitor = (KNNMonitor(cfg, bank.image_size, self.mean, self.std, self.device)
                        if cfg.monitor.every and self.ctx.is_main else None)
        self.epoch = 0
        self.global_step = 0
        self.samples_seen = 0
        self.skipped_steps = 0
        self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=self.device)
        # Called with a phase's name as each part of a step ends ("gather+augment", "forward+backward",
        # "optimizer", "pruning observe"); benchmarks/throughput.py times the split of a step with it.
        self.phase_done: Callable[[str], None] = _nothing

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "samples_seen": self.samples_seen,
            "skipped_steps": self.skipped_steps,
            "config": self.cfg.model_dump(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruning": self.pruner.state_dict(),
            "rng": self._rng_states(),
            "world_size": self.ctx.world_size,
            "data": {"name": self.cfg.data.name, "channels": self.bank.channels, "image_size": self.bank.image_size,
                     "num_classes": self.bank.num_classes, "mean": self.mean, "std": self.std},
        }

    def load_state_dict(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"The checkpoint's weights do not fit this run's model "
                                  f"({self.cfg.model.backbone}, {self.cfg.method.name}): {str(exc)[:600]}") from None
        if ckpt["pruning"]["table"]["scores"].numel() != self.pruner.num_samples:
            raise CheckpointError(f"The checkpoint's score table covers {ckpt['pruning']['table']['scores'].numel()} "
                                  f"samples but this run's dataset has {self.pruner.num_samples}.")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.pruner.load_state_dict(ckpt["pruning"])
        self.epoch = ckpt["epoch"]
        self.global_step = ckpt["global_step"]
        self.samples_seen = ckpt["samples_seen"]
        self.skipped_steps = ckpt.get("skipped_steps", 0)
        rng = ckpt["rng"]
        if ckpt.get("world_size", 1) == self.ctx.world_size:
            torch.set_rng_state(rng["torch"][self.ctx.rank])
            if self.cuda and rng["cuda"]:
                torch.cuda.set_rng_state(rng["cuda"][self.ctx.rank], self.device)
        else:  # resumed with another process count: plans and weights carry over, augmentation streams cannot
            torch.manual_seed(self.cfg.train.seed + 1_000_003 * self.ctx.rank + self.epoch)

    def _agreed_sizes(self, local: int) -> tuple[int, ...]:
        """Every rank's sample count this step (one small all-gather and host read: only when streamed files
        may be skipped, so the shards are no longer known in advance)."""
        counts = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.ctx.world_size)]
        dist.all_gather(counts, torch.tensor([local], device=self.device))
        return tuple(int(c) for c in counts)

    def _streamed(self, batch_indices: list[torch.Tensor]):
        """This rank's shard of each step's batch, read from disk by DataLoader workers, in step order."""
        if self.ctx.enabled:
            batch_indices = [b[Shard(split_sizes(len(b), self.ctx.world_size), self.ctx.rank).local]
                             for b in batch_indices]
        for read, raw, unreadable in self.bank.loader([b.tolist() for b in batch_indices], self.cfg.data.workers,
                                                      pin_memory=self.cuda):
            self.unreadable.update(unreadable.tolist())
            yield read, raw

    def _unreadable_count(self) -> int:
        """Distinct streamed files skipped so far, over all ranks (each rank reads different files)."""
        if not self.ctx.enabled:
            return len(self.unreadable)
        everyone: list = [None] * self.ctx.world_size
        dist.all_gather_object(everyone, self.unreadable)
        return len(set().union(*everyone))

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """One host sync (and, under DDP, one all-reduce) per step: the price of train.nonfinite=skip."""
        finite = torch.isfinite(loss.detach()).float()
        if self.ctx.enabled:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _rng_states(self) -> dict:
        """Every rank's generator states (collective under DDP), so each rank resumes its own stream."""
        states = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.cuda else None}
        gathered = [states]
        if self.ctx.enabled:
            gathered = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, states)
        return {"torch": [g["torch"] for g in gathered],
                "cuda": [g["cuda"] for g in gathered] if self.cuda else []}

    def save_checkpoint(self) -> Path:
        """Rank 0 writes; every rank takes part in gathering the RNG states."""
        folder = self.run_dir / "checkpoints"
        state = self.state_dict()
        last = folder / "last.pt"
        if not self.ctx.is_main:
            return last
        atomic_save(state, last)
        if self.epoch % self.cfg.train.checkpoint_every == 0:
            # A kept copy per checkpoint interval, should last.pt ever be damaged.
            atomic_save(state, folder / f"epoch_{self.epoch:04d}.pt")
        return last

    # ------------------------------------------------------------------ training

    def _autocast(self):
        return autocast(self.device, self.cfg.train.amp)

    def train_step(self, indices: torch.Tensor, lr: float,
                   loaded: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> Optional[SampleStats]:
        """One optimizer step on the global batch at ``indices``; the pruner observes every sample of it.

        Under DDP this rank trains its contiguous shard of ``indices``; the per-sample outputs are then
        gathered so every rank's pruner records the whole batch and the score tables stay identical.
        ``loaded`` is this rank's shard as streamed from disk: (the indices read, their uint8 images).
        Returns the statistics of the whole batch (detached under DDP), or None for a skipped non-finite step.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        shard = None
        global_indices = indices
        if self.ctx.enabled:
            shard = Shard(split_sizes(len(indices), self.ctx.world_size), self.ctx.rank)
            indices = indices[shard.local]
        if loaded is None:
            images = self.bank.batch(indices.to(self.bank.device)).to(self.device, non_blocking=True)
        else:
            read, raw = loaded
            images = raw.to(self.device, non_blocking=True).float().div_(255.0)
            if self.cfg.data.skip_unreadable:  # files may have been skipped: the step trains what was read
                indices = read.to(self.device, non_blocking=True)
                if shard is not None:
                    shard = Shard(self._agreed_sizes(len(read)), self.ctx.rank)
                    global_indices = shard.gather_detached(indices)
                else:
                    global_indices = indices
        weights = self.pruner.weights(indices)
        view0, view1 = self.views(images)
        view0 = view0.contiguous(memory_format=self.memory_format)
        view1 = view1.contiguous(memory_format=self.memory_format)
        self.phase_done("gather+augment")
        with self._autocast():
            output = self.forward(view0, view1, shard=shard) if shard is not None else self.forward(view0, view1)
        count = len(global_indices) / self.ctx.world_size if shard is not None else None
        loss = output.training_loss(weights, count)
        if self.cfg.train.nonfinite == "skip" and not self._all_finite(loss):
            self.skipped_steps += 1
            if self.ctx.enabled:
                loss.backward()  # DDP expects a backward after each forward; the gradients are then discarded
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.phase_done("forward+backward")
        self.optimizer.step()
        self.model.on_step_end()
        self.phase_done("optimizer")
        stats = sample_stats(output)
        if shard is not None:
            stats = gather_stats(stats, shard)
        self.pruner.observe(global_indices, stats, self.epoch)
        self.phase_done("pruning observe")
        return stats

    def train_epoch(self, plan: EpochPlan, bar: Optional[tqdm] = None,
                    tracker: Optional[Tracker] = None) -> tuple[torch.Tensor, int]:
        """Train on one epoch's plan; returns the summed per-sample loss (on the device) and the samples it sums."""
        cfg = self.cfg
        indices = plan.indices.to(self.device)
        # Near-equal batches close to batch_size: a pruned epoch's remainder would otherwise be a
        # tail batch of a few samples taking a full-size step, which derails contrastive training.
        num_batches = max(1, round(len(plan) / cfg.train.batch_size))
        batch_indices = indices.tensor_split(num_batches)
        streamed = self._streamed(list(plan.indices.tensor_split(num_batches))) if self.streaming else None
        loss_sum = torch.zeros((), device=self.device)
        trained = 0
        for b in range(num_batches):
            lr = learning_rate(cfg.optim, self.epoch + b / num_batches, cfg.train.epochs)
            output = self.train_step(batch_indices[b], lr, next(streamed) if streamed is not None else None)
            self.global_step += 1
            self.samples_seen += len(batch_indices[b]) if output is None else len(output.loss)
            if bar is not None:
                bar.update(len(batch_indices[b]))
            if output is None:  # a non-finite step skipped (train.nonfinite=skip)
                continue
            loss = output.loss.detach()
            trained += loss.numel()
            step_sum = loss.sum()
            loss_sum += step_sum  # stays on the device: no per-step sync
            # Remember the first step whose loss went non-finite, still without a sync, to name it later.
            first_bad = (~torch.isfinite(step_sum)) & (self.first_nonfinite_step < 0)
            self.first_nonfinite_step = torch.where(first_bad, self.global_step, self.first_nonfinite_step)
            if tracker is not None and self.global_step % cfg.train.log_every == 0:
                step_loss = loss.mean().item()
                if bar is not None:
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{step_loss:.4f}", lr=f"{lr:.3g}")
                tracker.log({"train/loss": step_loss, "train/lr": lr}, step=self.global_step)
        return loss_sum, trained

    def run(self, tracker: Tracker, show_progress: Optional[bool] = None) -> PretrainResult:
        cfg = self.cfg
        epochs = cfg.train.epochs
        history: list[dict] = []
        started = time.perf_counter()
        images_trained = 0
        last_epoch_loss = float("nan")
        checkpoint = self.run_dir / "checkpoints" / "last.pt"
        expected_forwards = round((1.0 - self.pruner.cfg.rate if self.pruner.active else 1.0) * epochs * len(self.bank))
        quiet = not self.ctx.is_main or show_progress is False
        bar = tqdm(total=expected_forwards, initial=min(self.samples_seen, expected_forwards), unit="img",
                   unit_scale=True, dynamic_ncols=True, disable=True if quiet else None)
        self.model.train()
        while self.epoch < epochs:
            epoch_start = time.perf_counter()
            plan = self.pruner.plan(self.epoch)
            try:
                loss_sum, trained = self.train_epoch(plan, bar, tracker)
            except UnreadableImageError as exc:
                bar.close()
                # Re-raised from a DataLoader worker, the message carries the worker's traceback; its last line
                # names the file.
                reason = str(exc).strip().splitlines()[-1].removeprefix("ssl_emp.data.datasets.")
                reason = reason.removeprefix("UnreadableImageError: ").rstrip(".")
                kept = (f"its last checkpoint ({checkpoint}) is intact" if checkpoint.is_file()
                        else "no checkpoint had been written yet")
                raise UnreadableImageError(
                    f"{reason}. The run stopped in epoch {self.epoch + 1}; {kept}. Remove or replace the file, or "
                    "set data.skip_unreadable=true to skip such files (they are counted as data/unreadable_files)."
                ) from None
            if self.cuda:
                torch.cuda.synchronize()
            epoch_seconds = time.perf_counter() - epoch_start
            last_epoch_loss = (loss_sum / max(trained, 1)).item()
            images_trained += len(plan)
            self.epoch += 1
            record = {"epoch": self.epoch, "train/epoch_loss": last_epoch_loss, "train/epoch_seconds": epoch_seconds,
                      "train/images_per_second": len(plan) / epoch_seconds, "train/samples_seen": self.samples_seen,
                      "train/lr": learning_rate(cfg.optim, self.epoch, epochs),
                      **self.pruner.epoch_metrics(plan, self.epoch, self.samples_seen)}
            if self.monitor is not None and self.monitor.due(self.epoch, epochs) and math.isfinite(last_epoch_loss):
                record.update(self.monitor(self.model.backbone))
            if self.skipped_steps:
                record["train/skipped_steps"] = self.skipped_steps
            if self.streaming and cfg.data.skip_unreadable:
                record["data/unreadable_files"] = self._unreadable_count()
            history.append(record)
            tracker.log(record, step=self.global_step)
            if not math.isfinite(last_epoch_loss):
                bar.close()
                step = int(self.first_nonfinite_step)
                raise FloatingPointError(
                    f"The training loss became {last_epoch_loss} at step {step} (epoch {self.epoch}); the run stopped "
                    f"without saving, so the last good checkpoint is {checkpoint}. Lower optim.lr, check the data, "
                    "or set train.nonfinite=skip to skip such steps (they are counted as train/skipped_steps).")
            saving = self.epoch % cfg.train.checkpoint_every == 0 or self.epoch == epochs
            if saving:
                checkpoint = self.save_checkpoint()
            if (saving or "monitor/knn_top1" in record) and self.ctx.is_main:
                knn = f"  kNN top-1 {record['monitor/knn_top1']:.4f}" if "monitor/knn_top1" in record else ""
                saved = f"  checkpoint {checkpoint}" if saving else ""
                bar.write(f"epoch {self.epoch}/{epochs}  loss {last_epoch_loss:.4f}{knn}  "
                          f"{record['train/images_per_second']:.0f} img/s  kept {len(plan)}/{len(self.bank)}{saved}")
        bar.close()
        seconds = time.perf_counter() - started
        return PretrainResult(
            run_dir=self.run_dir, checkpoint=checkpoint, epochs_done=self.epoch, global_step=self.global_step,
            final_loss=last_epoch_loss, seconds=seconds,
            images_per_second=images_trained / seconds if seconds > 0 else float("nan"),
            requested_rate=self.pruner.requested_rate,
            achieved_rate=achieved_rate(self.samples_seen, self.epoch * len(self.bank)),
            sample_forwards=self.samples_seen, full_data_forwards=self.epoch * len(self.bank), history=history,
            is_main=self.ctx.is_main)


def pretrain(cfg: PretrainConfig, recipe: str = "run", show_progress: Optional[bool] = None,
             train_bank: Optional[ImageBank] = None) -> PretrainResult:
    """Run (or resume) one pretraining job; returns where it wrote things and how it went.

    Under torchrun every process calls this; rank 0 alone writes the config, metrics, W&B and checkpoints.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(cfg.train.device)
    try:
        return _pretrain(cfg, recipe, show_progress, train_bank, ctx)
    finally:
        if ctx.enabled and owns_group:
            dist.destroy_process_group()


def _pretrain(cfg, recipe, show_progress, train_bank, ctx: DistContext) -> PretrainResult:
    run_dir = prepare_run_dir(cfg, recipe, ctx)
    trainer = Pretrainer(cfg, run_dir, train_bank, ctx)
    run_id_file = run_dir / "wandb_run_id"
    if cfg.run.resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=trainer.device)
        check_resume_compatible(ckpt["config"], cfg, run_dir)
        shifts = check_resume_epochs(ckpt["config"], cfg, run_dir, ckpt["epoch"], len(trainer.bank))
        trainer.load_state_dict(ckpt)
        if ctx.is_main:
            print(f"Resuming {run_dir} at epoch {trainer.epoch} (step {trainer.global_step}).")
            for shift in shifts:
                print(f"  run.extend=true: {shift}")
    if not ctx.is_main:
        return trainer.run(NullTracker(), show_progress=False)
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    tracker = Tracker(run_dir, mode=cfg.tracking.wandb, project=cfg.tracking.project, entity=cfg.tracking.entity,
                      name=run_dir.name, config=cfg.model_dump(), job_type="pretrain", group=run_dir.name,
                      run_id=run_id)
    if tracker.wandb_run is not None and run_id is None:
        run_id_file.write_text(tracker.wandb_run.id)
    try:
        result = trainer.run(tracker, show_progress)
        tracker.summary({"final_loss": result.final_loss, "images_per_second": result.images_per_second,
                         "seconds": result.seconds, "epochs": result.epochs_done,
                         "pruning/requested_rate": result.requested_rate, "pruning/achieved_rate": result.achieved_rate,
                         "pruning/sample_forwards": result.sample_forwards, "train/skipped_steps": trainer.skipped_steps,
                         "world_size": ctx.world_size})
    finally:
        tracker.finish()
    return result
