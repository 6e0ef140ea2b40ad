"""The pretraining loop. It takes its parts ready-made, in three groups (``ssl_emp.engine.parts``;
``ssl_emp.build`` makes them from a config):

    trainer = Pretrainer(TrainParts(source, views, method, optimizer, pruner), Schedules(lr), RunSettings(...))
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
from typing import Optional

import torch
from torch.profiler import record_function

from ssl_emp.data import UnreadableImageError
from ssl_emp.device import autocast
from ssl_emp.distributed import Shard, agreed_shard, all_finite, step_shard
from ssl_emp.engine.dashboard import epoch_pictures
from ssl_emp.engine.embed import embed
from ssl_emp.engine.failures import nonfinite_stop, unreadable_stop
from ssl_emp.engine.interrupt import EpochPosition, RunInterrupted, StopSignals
from ssl_emp.engine.optim import compute_progress, set_weight_decay
from ssl_emp.engine.parts import RunCounters, RunSettings, Schedules, TrainParts
from ssl_emp.engine.run_report import PretrainResult, epoch_line, epoch_record, run_result
from ssl_emp.engine.run_state import restore_run_state, run_state, save_run_state
from ssl_emp.progress import Progress, mode_for
from ssl_emp.pruning import EpochPlan, SampleStats, near_equal_batches


class Pretrainer:
    """One pretraining run over ``parts``, its knobs following ``schedules``, as ``settings`` say."""

    def __init__(self, parts: TrainParts, schedules: Schedules, settings: RunSettings):
        self.parts, self.schedules, self.settings = parts, schedules, settings
        self.counts = RunCounters()
        self.planned_forwards = parts.pruner.planned_forwards()
        self.position: Optional[EpochPosition] = None  # set while stopped inside an epoch
        self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=settings.device)

    def state_dict(self) -> dict:
        return run_state(self.parts, self.settings, self.counts, self.position)

    def load_state_dict(self, ckpt: dict) -> None:
        self.position = restore_run_state(ckpt, self.parts, self.settings, self.counts)

    def save_checkpoint(self) -> Path:
        """Every rank takes part (the RNG states are gathered); rank 0 writes."""
        return save_run_state(self.state_dict(), self.settings, self.counts.epoch, self.position is not None)

    def train_step(
        self, indices: torch.Tensor, images: torch.Tensor, shard: Optional[Shard], global_indices: torch.Tensor
    ) -> Optional[SampleStats]:
        """One optimizer step: this rank trains ``images`` (uint8, the samples at ``indices``), its ``shard`` of the
        global batch at ``global_indices``; the pruner then observes the whole global batch, its statistics
        gathered under DDP so every rank's score table stays identical. Returns those statistics, or None for a
        skipped non-finite step. Each phase is a ``torch.profiler.record_function`` range, for profilers."""
        p, s, fmt = self.parts, self.settings, self.settings.memory_format
        with record_function("ssl_emp.views"):
            images = images.to(s.device, non_blocking=True).float().div_(255.0)
            if p.source.drops_unreadable:  # files may have been skipped: the step trains what was read
                indices = indices.to(s.device, non_blocking=True)
                shard = agreed_shard(len(indices), s.ctx, s.device) if shard is not None else None
                global_indices = shard.gather_detached(indices) if shard is not None else indices
            weights = p.pruner.weights(indices)
            view0, view1 = (v.contiguous(memory_format=fmt) for v in p.views(images))
            extra = {} if shard is None else {"shard": shard}
            if getattr(p.views, "local_crops", 0):  # multi-crop: the smaller views a method's student sees
                extra["local_views"] = [v.contiguous(memory_format=fmt) for v in p.views.local_views(images)]
        with record_function("ssl_emp.forward_backward"):
            with autocast(s.device, s.amp):
                stats = p.forward(view0, view1, **extra)
            loss = stats.training_loss(weights, len(global_indices) / s.ctx.world_size if shard is not None else None)
            if s.nonfinite == "skip" and not all_finite(loss, s.ctx):  # one sync per step: the price of skip
                self.counts.skipped_steps += 1
                if s.ctx.enabled:
                    loss.backward()  # DDP expects a backward after each forward; the gradients are then discarded
                p.optimizer.zero_grad(set_to_none=True)
                return None
            p.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("ssl_emp.optimizer"):
            p.method.before_optimizer_step()
            if self.schedules.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(p.method.parameters(), self.schedules.clip_grad)
            p.optimizer.step()
            p.method.on_step_end()
        with record_function("ssl_emp.pruning_observe"):
            if shard is not None:
                stats = stats.from_block(shard.gather_detached(stats.to_block()))
            p.pruner.observe(global_indices, stats, self.counts.epoch)
        return stats

    def refresh_embeddings(self) -> None:
        """Give the pruner every sample's clean-image embedding. Each rank embeds a contiguous share and keeps it:
        under DDP the memory is sharded, and the clustering runs across the ranks. Costs one forward per sample,
        which the pruner counts."""
        p, s = self.parts, self.settings
        if p.normalize is None:
            raise ValueError(f"selector {p.pruner.cfg.selector} needs clean-image embeddings: give normalize=")
        started = time.perf_counter()
        share = torch.arange(len(p.source)).tensor_split(s.ctx.world_size)[s.ctx.rank]
        read, features = embed(
            p.source,
            p.method.backbone,
            p.normalize,
            share,
            batch_size=2 * s.batch_size,
            device=s.device,
            amp=s.amp,
            memory_format=s.memory_format,
        )
        p.pruner.set_embeddings(read, features, self.counts.epoch, shard=s.ctx.enabled)
        self.counts.embedding_seconds += time.perf_counter() - started

    def progress(self, epoch_fraction: float = 0.0) -> float:
        """Where the run is on its schedule, in epochs: the planned compute's fraction done, or, where it cannot
        be planned, the epochs done (with ``epoch_fraction`` of the current one)."""
        s, c = self.settings, self.counts
        by_compute = compute_progress(s.epochs, c.forwards_spent, self.planned_forwards, s.max_forwards)
        return c.epoch + epoch_fraction if by_compute is None else by_compute

    def set_knobs(self, at: float) -> None:
        """The learning rate, weight decay and the method's own schedules (a teacher's momentum) at ``at``."""
        p = self.parts
        p.method.set_progress(at / self.settings.epochs)
        if self.schedules.weight_decay is not None:
            set_weight_decay(p.optimizer, self.schedules.weight_decay(at))
        for group in p.optimizer.param_groups:
            group["lr"] = self.schedules.lr(at)

    def train_epoch(
        self, plan: EpochPlan, progress=None, tracker=None, stop: Optional[StopSignals] = None, position=None
    ) -> EpochPosition:
        """Train on one epoch's plan, from ``position`` (a run resumed inside the epoch) on; returns how far it
        got (all its steps, unless ``stop`` asked to stop) with the summed per-sample loss (on the device) and
        the samples it sums."""
        s, c = self.settings, self.counts
        batches = near_equal_batches(plan.indices.to(s.device), s.batch_size)
        shards = [step_shard(len(b), s.ctx) for b in batches]
        local = [b if shard is None else b[shard.local] for b, shard in zip(batches, shards)]
        first, loss_sum, trained = (0, torch.zeros((), device=s.device), 0) if position is None else position.resumed
        if progress is not None:
            progress.start(c.epoch + 1, len(batches))
        for b, (indices, images) in enumerate(self.parts.source.batches(local[first:]), first):
            self.set_knobs(self.progress(b / len(batches)))
            stats = self.train_step(indices, images, shards[b], batches[b])
            c.global_step += 1
            c.samples_seen += len(batches[b]) if stats is None else len(stats.loss)
            c.unreadable_skips += 0 if stats is None else len(batches[b]) - len(stats.loss)
            step_loss, postfix = None, {}
            if stats is not None:  # else a non-finite step skipped (train.nonfinite=skip)
                step_sum = stats.loss.detach().sum()
                trained += stats.loss.numel()
                loss_sum += step_sum  # stays on the device: no per-step sync
                step_loss = step_sum / stats.loss.numel()
                # Remember the first step whose loss went non-finite, still without a sync, to name it later.
                first_bad = (~torch.isfinite(step_sum)) & (self.first_nonfinite_step < 0)
                self.first_nonfinite_step = torch.where(first_bad, c.global_step, self.first_nonfinite_step)
                if tracker is not None and c.global_step % s.log_every == 0:
                    step_loss, lr = step_loss.item(), self.parts.optimizer.param_groups[0]["lr"]
                    postfix = {"loss": f"{step_loss:.4f}", "lr": f"{lr:.3g}"}
                    tracker.log({"train/loss": step_loss, "train/lr": lr}, step=c.global_step)
            if progress is not None:
                progress.step(b + 1, len(batches[b]), step_loss, postfix)
            signum = stop.requested() if stop is not None else 0
            if signum:
                return EpochPosition(b + 1, plan, loss_sum, trained, len(batches), signum)
        return EpochPosition(len(batches), plan, loss_sum, trained, len(batches))

    def _interrupted(self, signum: int, reached: Optional[EpochPosition] = None) -> RunInterrupted:
        """Save where the run stopped (inside an epoch: ``reached``) and say how to go on."""
        self.position = reached
        self.save_checkpoint()
        s = self.settings
        return RunInterrupted(
            signum, self.counts.epoch + (reached is not None), self.counts.global_step, s.run_dir, s.ctx.is_main
        )

    def run(self, tracker, show_progress: Optional[bool] = None) -> PretrainResult:
        """Train to the end; SIGINT, SIGTERM or SIGUSR1 stop it after the current step, saved, with
        :class:`RunInterrupted`."""
        with StopSignals(self.settings.ctx) as stop:
            return self._run(tracker, show_progress, stop)

    def _plan(self, position: Optional[EpochPosition]) -> EpochPlan:
        """This epoch's plan: the saved one where the run resumed inside it, else the pruner's (cut short where
        the compute budget ends within it)."""
        p, s, c = self.parts, self.settings, self.counts
        if position is not None:
            return p.pruner.use_plan(c.epoch, position.plan)
        if p.pruner.needs_embeddings(c.epoch):
            self.refresh_embeddings()
        plan = p.pruner.plan(c.epoch)
        return plan if s.max_forwards is None else plan.head(s.max_forwards - c.forwards_spent)

    def _run(self, tracker, show_progress: Optional[bool], stop: StopSignals) -> PretrainResult:
        p, s, c = self.parts, self.settings, self.counts
        history: list[dict] = []
        started, seen_at_start, last_epoch_loss = time.perf_counter(), c.samples_seen, float("nan")
        checkpoint = s.run_dir / "checkpoints" / "last.pt"
        every_epoch = s.epochs * len(p.source)
        expected = min(self.planned_forwards or every_epoch, s.max_forwards or every_epoch)
        progress = Progress("epoch", s.epochs, expected, c.samples_seen, mode=mode_for(show_progress, s.ctx.is_main))
        position, self.position = self.position, None
        p.method.train()
        with progress:
            while c.epoch < s.epochs:
                epoch_start, seen_before = time.perf_counter(), c.samples_seen
                plan = self._plan(position)
                try:
                    reached = self.train_epoch(plan, progress, tracker, stop, position)
                except UnreadableImageError as exc:
                    raise unreadable_stop(exc, c.epoch, checkpoint) from None
                position = None
                if reached.signum and reached.inside:
                    raise self._interrupted(reached.signum, reached)
                if s.device.type == "cuda":
                    torch.cuda.synchronize()
                epoch_seconds = time.perf_counter() - epoch_start
                last_epoch_loss = (reached.loss_sum / max(reached.trained, 1)).item()
                c.epoch += 1
                finished = s.finished(c)
                lr, trained = self.schedules.lr(self.progress()), c.samples_seen - seen_before
                record = epoch_record(p, c, plan, lr, last_epoch_loss, epoch_seconds, trained, finished)
                history.append(record)
                tracker.log(record, step=c.global_step)
                pictures = lambda: epoch_pictures(p, s.data_info, s.device)  # noqa: E731 - made only when due
                tracker.epoch_pictures(c.epoch, finished, pictures, step=c.global_step)
                if not math.isfinite(last_epoch_loss):
                    raise nonfinite_stop(last_epoch_loss, int(self.first_nonfinite_step), c.epoch, checkpoint)
                saving = c.epoch % s.checkpoint_every == 0 or finished
                if saving:
                    checkpoint = self.save_checkpoint()
                line = epoch_line(c.epoch, s.epochs, record, len(plan), len(p.source), checkpoint if saving else None)
                progress.line(line, always=saving or "monitor/knn_top1" in record)
                if finished:
                    break
                if reached.signum:  # asked at the epoch's last step: the epoch is done, and saved here
                    raise self._interrupted(reached.signum)
        seconds = time.perf_counter() - started
        return run_result(p, c, s, checkpoint, last_epoch_loss, seconds, c.samples_seen - seen_at_start, history)
