"""The pretraining loop. It takes its parts ready-made (``ssl_emp.build`` makes them from a config):

    trainer = Pretrainer(source, views, method, optimizer, pruner, schedule, run_dir=..., epochs=..., ...)
    result = trainer.run(tracker)

Each epoch the pruner plans which samples to train on; the plan is cut into near-equal batches; the batch
source yields each step's ``(indices, uint8 images)`` (from an in-memory bank or a folder streamed from disk);
the views are made on the device; the method returns per-sample statistics; the weighted loss is
back-propagated; the pruner observes the whole global batch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.profiler import record_function

from ssl_emp.checkpoint import FORMAT, CheckpointError, atomic_save
from ssl_emp.data import UnreadableImageError
from ssl_emp.device import autocast
from ssl_emp.distributed import DistContext, Shard, agreed_shard, all_finite, restore_rng, rng_states, step_shard
from ssl_emp.engine.dashboard import epoch_pictures
from ssl_emp.engine.failures import nonfinite_stop, unreadable_stop
from ssl_emp.engine.interrupt import EpochPosition, RunInterrupted, StopSignals
from ssl_emp.engine.optim import compute_progress, set_weight_decay
from ssl_emp.engine.run_report import PretrainResult, epoch_line, epoch_record, run_result
from ssl_emp.methods import SelfSupervisedMethod
from ssl_emp.progress import Progress, mode_for
from ssl_emp.pruning import EpochPlan, Pruner, SampleStats, near_equal_batches


class Pretrainer:
    """One pretraining run over parts made elsewhere. ``method`` is the model whose state is saved; ``forward``
    is what steps call (the method wrapped by DDP or ``torch.compile``; default the method itself).
    ``schedule(progress)`` gives the learning rate over ``epochs``, progress being the fraction of the planned
    sample-forwards done (:func:`~ssl_emp.engine.optim.compute_progress`). ``max_forwards`` ends the run once
    that many sample-forwards are done, its last epoch cut short. ``weight_decay_schedule(progress)`` (optional)
    gives the decayed parameters' weight decay the same way; ``clip_grad`` (optional) caps the gradients' global
    norm. ``run_config`` and ``data_info`` are saved in each checkpoint, so evaluation can rebuild the backbone."""

    def __init__(
        self,
        source,
        views: nn.Module,
        method: SelfSupervisedMethod,
        optimizer: torch.optim.Optimizer,
        pruner: Pruner,
        schedule: Callable[[float], float],
        *,
        run_dir: Path,
        epochs: int,
        batch_size: int,
        device: torch.device,
        forward: Optional[nn.Module] = None,
        ctx: DistContext = DistContext(),
        seed: int = 0,
        amp: bool = True,
        channels_last: bool = True,
        nonfinite: str = "stop",
        checkpoint_every: int = 10,
        log_every: int = 10,
        monitor=None,
        max_forwards: Optional[int] = None,
        run_config: Optional[dict] = None,
        data_info: Optional[dict] = None,
        normalize: Optional[nn.Module] = None,
        weight_decay_schedule: Optional[Callable[[float], float]] = None,
        clip_grad: Optional[float] = None,
    ):
        self.source, self.views, self.model, self.optimizer = source, views, method, optimizer
        self.pruner, self.schedule, self.forward = pruner, schedule, forward or method
        self.weight_decay_schedule, self.clip_grad = weight_decay_schedule, clip_grad
        self.run_dir, self.epochs, self.batch_size, self.device, self.ctx = run_dir, epochs, batch_size, device, ctx
        self.seed, self.amp, self.nonfinite, self.monitor = seed, amp, nonfinite, monitor
        self.checkpoint_every, self.log_every, self.max_forwards = checkpoint_every, log_every, max_forwards
        self.planned_forwards = pruner.planned_forwards()
        self.run_config, self.data_info = run_config or {}, data_info or {}
        self.normalize = normalize  # the clean view (normalisation only): what the pruner's embeddings are made of
        self.embedding_seconds = 0.0
        self.cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if (self.cuda and channels_last) else torch.contiguous_format
        self.epoch = self.global_step = self.samples_seen = self.skipped_steps = self.unreadable_skips = 0
        self.position: Optional[EpochPosition] = None  # set while stopped inside an epoch
        self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=device)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "samples_seen": self.samples_seen,
            "skipped_steps": self.skipped_steps,
            "unreadable_skips": self.unreadable_skips,
            "config": self.run_config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruning": self.pruner.state_dict(),
            "rng": rng_states(self.ctx, self.device),
            "world_size": self.ctx.world_size,
            "data": self.data_info,
            "position": self.position.state_dict() if self.position is not None else None,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            model = self.run_config.get("model", {}).get("backbone", type(self.model).__name__)
            raise CheckpointError(
                f"The checkpoint's weights do not fit this run's model "
                f"({model}, {type(self.model).__name__.lower()}): {str(exc)[:600]}"
            ) from None
        if ckpt["pruning"]["table"]["scores"].numel() != self.pruner.num_samples:
            raise CheckpointError(
                f"The checkpoint's score table covers {ckpt['pruning']['table']['scores'].numel()} "
                f"samples but this run's dataset has {self.pruner.num_samples}."
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.pruner.load_state_dict(ckpt["pruning"])
        self.epoch, self.global_step, self.samples_seen = ckpt["epoch"], ckpt["global_step"], ckpt["samples_seen"]
        self.skipped_steps, self.unreadable_skips = ckpt.get("skipped_steps", 0), ckpt.get("unreadable_skips", 0)
        self.position = EpochPosition.from_state(ckpt.get("position"), self.device)
        restore_rng(ckpt["rng"], ckpt.get("world_size", 1), self.ctx, self.device, reseed=self.seed + self.epoch)

    def save_checkpoint(self) -> Path:
        """Rank 0 writes (atomically); every rank takes part in gathering the RNG states."""
        folder = self.run_dir / "checkpoints"
        state, last = self.state_dict(), folder / "last.pt"
        if self.ctx.is_main:
            atomic_save(state, last)
            if self.epoch % self.checkpoint_every == 0 and self.position is None:  # a kept copy per interval
                atomic_save(state, folder / f"epoch_{self.epoch:04d}.pt")
        return last

    # ------------------------------------------------------------------ training

    def train_step(
        self,
        indices: torch.Tensor,
        images: torch.Tensor,
        shard: Optional[Shard],
        global_indices: torch.Tensor,
        lr: float,
    ) -> Optional[SampleStats]:
        """One optimizer step: this rank trains ``images`` (uint8, the samples at ``indices``), its ``shard`` of the
        global batch at ``global_indices``; the pruner then observes the whole global batch, its statistics
        gathered under DDP so every rank's score table stays identical. Returns those statistics, or None for a
        skipped non-finite step. Each phase is a ``torch.profiler.record_function`` range, for profilers."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with record_function("ssl_emp.views"):
            images = images.to(self.device, non_blocking=True).float().div_(255.0)
            if self.source.drops_unreadable:  # files may have been skipped: the step trains what was read
                indices = indices.to(self.device, non_blocking=True)
                shard = agreed_shard(len(indices), self.ctx, self.device) if shard is not None else None
                global_indices = shard.gather_detached(indices) if shard is not None else indices
            weights = self.pruner.weights(indices)
            view0, view1 = (v.contiguous(memory_format=self.memory_format) for v in self.views(images))
            extra = {} if shard is None else {"shard": shard}
            if getattr(self.views, "local_crops", 0):  # multi-crop: the smaller views only DINO's student sees
                extra["local_views"] = [
                    v.contiguous(memory_format=self.memory_format) for v in self.views.local_views(images)
                ]
        with record_function("ssl_emp.forward_backward"):
            with autocast(self.device, self.amp):
                stats = self.forward(view0, view1, **extra)
            loss = stats.training_loss(
                weights, len(global_indices) / self.ctx.world_size if shard is not None else None
            )
            if self.nonfinite == "skip" and not all_finite(loss, self.ctx):  # one sync per step: the price of skip
                self.skipped_steps += 1
                if self.ctx.enabled:
                    loss.backward()  # DDP expects a backward after each forward; the gradients are then discarded
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("ssl_emp.optimizer"):
            self.model.before_optimizer_step()
            if self.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.optimizer.step()
            self.model.on_step_end()
        with record_function("ssl_emp.pruning_observe"):
            if shard is not None:
                stats = stats.from_block(shard.gather_detached(stats.to_block()))
            self.pruner.observe(global_indices, stats, self.epoch)
        return stats

    @torch.no_grad()
    def refresh_embeddings(self) -> None:
        """Give the pruner every sample's clean-image embedding (the backbone in eval mode, as evaluation reads it).
        Each rank embeds a contiguous share and keeps it: under DDP the memory is sharded, and the clustering runs
        across the ranks. A file that could not be read gets a zero vector. Costs one forward per sample, which the
        pruner counts."""
        if self.normalize is None:
            raise ValueError(
                f"selector {self.pruner.cfg.selector} needs clean-image embeddings: give the trainer "
                "normalize= (the evaluation transform)"
            )
        started = time.perf_counter()
        share = torch.arange(len(self.source)).tensor_split(self.ctx.world_size)[self.ctx.rank]
        backbone = self.model.backbone
        backbone.eval()
        read, features = [], []
        try:
            for indices, images in self.source.batches(list(share.split(2 * self.batch_size))):
                images = images.to(self.device, non_blocking=True).float().div_(255.0)
                with autocast(self.device, self.amp):
                    clean = self.normalize(images).contiguous(memory_format=self.memory_format)
                    features.append(backbone(clean).float())
                read.append(indices.to(self.device))
        finally:
            backbone.train()
        read, features = torch.cat(read), torch.cat(features)
        if read.numel() < share.numel():
            missing = share.to(self.device)[~torch.isin(share.to(self.device), read)]
            read = torch.cat([read, missing])
            features = torch.cat([features, features.new_zeros(len(missing), features.shape[1])])
        self.pruner.set_embeddings(read, features, self.epoch, shard=self.ctx.enabled)
        self.embedding_seconds += time.perf_counter() - started

    @property
    def forwards_spent(self) -> int:
        """Planned sample-forwards used up: those trained, and those lost to unreadable files (so the schedule and
        the compute budget still end where planned)."""
        return self.samples_seen + self.unreadable_skips

    def progress(self, epoch_fraction: float = 0.0) -> float:
        """Where the run is on its schedule, in epochs: the planned compute's fraction done, or, where it cannot
        be planned, the epochs done (with ``epoch_fraction`` of the current one)."""
        by_compute = compute_progress(self.epochs, self.forwards_spent, self.planned_forwards, self.max_forwards)
        return self.epoch + epoch_fraction if by_compute is None else by_compute

    def train_epoch(
        self,
        plan: EpochPlan,
        progress: Optional[Progress] = None,
        tracker=None,
        stop: Optional[StopSignals] = None,
        position: Optional[EpochPosition] = None,
    ) -> EpochPosition:
        """Train on one epoch's plan, from ``position`` (a run resumed inside the epoch) on; returns how far it
        got (all its steps, unless ``stop`` asked to stop) with the summed per-sample loss (on the device) and
        the samples it sums."""
        batches = near_equal_batches(plan.indices.to(self.device), self.batch_size)
        num_batches = len(batches)
        shards = [step_shard(len(b), self.ctx) for b in batches]
        local = [b if s is None else b[s.local] for b, s in zip(batches, shards)]
        first = position.steps_done if position is not None else 0
        loss_sum = position.loss_sum if position is not None else torch.zeros((), device=self.device)
        trained = position.trained if position is not None else 0
        if progress is not None:
            progress.start(self.epoch + 1, num_batches)
        for b, (indices, images) in enumerate(self.source.batches(local[first:]), first):
            at = self.progress(b / num_batches)
            self.model.set_progress(at / self.epochs)  # a teacher's momentum follows the run, as the lr does
            if self.weight_decay_schedule is not None:
                set_weight_decay(self.optimizer, self.weight_decay_schedule(at))
            lr = self.schedule(at)
            stats = self.train_step(indices, images, shards[b], batches[b], lr)
            self.global_step += 1
            self.samples_seen += len(batches[b]) if stats is None else len(stats.loss)
            self.unreadable_skips += 0 if stats is None else len(batches[b]) - len(stats.loss)
            step_loss, postfix = None, {}
            if stats is not None:  # else a non-finite step skipped (train.nonfinite=skip)
                loss = stats.loss.detach()
                trained += loss.numel()
                step_sum = loss.sum()
                loss_sum += step_sum  # stays on the device: no per-step sync
                step_loss = step_sum / loss.numel()
                # Remember the first step whose loss went non-finite, still without a sync, to name it later.
                first_bad = (~torch.isfinite(step_sum)) & (self.first_nonfinite_step < 0)
                self.first_nonfinite_step = torch.where(first_bad, self.global_step, self.first_nonfinite_step)
                if tracker is not None and self.global_step % self.log_every == 0:
                    step_loss = step_loss.item()
                    postfix = {"loss": f"{step_loss:.4f}", "lr": f"{lr:.3g}"}
                    tracker.log({"train/loss": step_loss, "train/lr": lr}, step=self.global_step)
            if progress is not None:
                progress.step(b + 1, len(batches[b]), step_loss, postfix)
            signum = stop.requested() if stop is not None else 0
            if signum:
                return EpochPosition(b + 1, plan, loss_sum, trained, num_batches, signum)
        return EpochPosition(num_batches, plan, loss_sum, trained, num_batches)

    def _interrupted(self, signum: int, reached: Optional[EpochPosition] = None) -> RunInterrupted:
        """Save where the run stopped (inside an epoch: ``reached``) and say how to go on."""
        self.position = reached
        self.save_checkpoint()
        return RunInterrupted(
            signum, self.epoch + (reached is not None), self.global_step, self.run_dir, self.ctx.is_main
        )

    def run(self, tracker, show_progress: Optional[bool] = None) -> PretrainResult:
        """Train to the end; SIGINT, SIGTERM or SIGUSR1 stop it after the current step, saved, with
        :class:`RunInterrupted`."""
        with StopSignals(self.ctx) as stop:
            return self._run(tracker, show_progress, stop)

    def _run(self, tracker, show_progress: Optional[bool], stop: StopSignals) -> PretrainResult:
        epochs, num_samples = self.epochs, len(self.source)
        history: list[dict] = []
        started, images_trained, last_epoch_loss = time.perf_counter(), 0, float("nan")
        checkpoint = self.run_dir / "checkpoints" / "last.pt"
        expected_forwards = min(
            self.planned_forwards or epochs * num_samples, self.max_forwards or epochs * num_samples
        )
        progress = Progress(
            "epoch",
            epochs,
            expected_forwards,
            self.samples_seen,
            mode=mode_for(show_progress) if self.ctx.is_main else "off",
        )
        position, self.position = self.position, None
        self.model.train()
        while self.epoch < epochs:
            epoch_start, seen_before = time.perf_counter(), self.samples_seen
            if position is not None:  # resumed inside this epoch: its saved plan, from the saved step
                plan = self.pruner.use_plan(self.epoch, position.plan)
            else:
                if self.pruner.needs_embeddings(self.epoch):
                    self.refresh_embeddings()
                plan = self.pruner.plan(self.epoch)
                if self.max_forwards is not None:  # the compute budget may end within this epoch
                    plan = plan.head(self.max_forwards - self.forwards_spent)
            try:
                reached = self.train_epoch(plan, progress, tracker, stop, position)
            except UnreadableImageError as exc:
                progress.close()
                raise unreadable_stop(exc, self.epoch, checkpoint) from None
            position = None
            if reached.signum and reached.inside:
                progress.close()
                raise self._interrupted(reached.signum, reached)
            if self.cuda:
                torch.cuda.synchronize()
            epoch_seconds = time.perf_counter() - epoch_start
            last_epoch_loss = (reached.loss_sum / max(reached.trained, 1)).item()
            epoch_images = self.samples_seen - seen_before
            images_trained += epoch_images
            self.epoch += 1
            budget_spent = self.max_forwards is not None and self.forwards_spent >= self.max_forwards
            finished = self.epoch == epochs or budget_spent
            record = epoch_record(self, plan, last_epoch_loss, epoch_seconds, epoch_images, finished)
            history.append(record)
            tracker.log(record, step=self.global_step)
            tracker.epoch_pictures(self.epoch, finished, lambda: epoch_pictures(self), step=self.global_step)
            if not math.isfinite(last_epoch_loss):
                progress.close()
                raise nonfinite_stop(last_epoch_loss, int(self.first_nonfinite_step), self.epoch, checkpoint)
            saving = self.epoch % self.checkpoint_every == 0 or finished
            if saving:
                checkpoint = self.save_checkpoint()
            progress.line(
                epoch_line(self, record, len(plan), checkpoint if saving else None),
                always=saving or "monitor/knn_top1" in record,
            )
            if finished:
                break
            if reached.signum:  # asked at the epoch's last step: the epoch is done, and saved here
                progress.close()
                raise self._interrupted(reached.signum)
        progress.close()
        return run_result(self, checkpoint, last_epoch_loss, time.perf_counter() - started, images_trained, history)
