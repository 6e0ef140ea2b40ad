"""The pretraining loop: epochs over batches of indices into an in-memory image bank."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import torch
import yaml
from tqdm import tqdm

from ssl_emp.config import PretrainConfig
from ssl_emp.data import ImageBank, load_bank
from ssl_emp.data.augment import TwoViews
from ssl_emp.engine.checkpoint import FORMAT, atomic_save, load_checkpoint
from ssl_emp.engine.monitor import KNNMonitor
from ssl_emp.engine.optim import build_optimizer, learning_rate
from ssl_emp.methods import ContrastiveMethod, MethodOutput, build_method
from ssl_emp.pruning import EpochPlan, Pruner
from ssl_emp.tracking import Tracker


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
    requested_rate: float
    achieved_rate: float
    sample_forwards: int
    full_data_forwards: int
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto.")
    return device


def prepare_run_dir(cfg: PretrainConfig, recipe: str) -> Path:
    name = cfg.run.name or f"{recipe}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run.out_dir) / name
    has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file()
    if cfg.run.resume and not has_checkpoint:
        raise RunDirError(f"run.resume=true but '{run_dir}' has no checkpoints/last.pt to resume from.")
    if not cfg.run.resume and has_checkpoint:
        raise RunDirError(f"Run directory '{run_dir}' already holds a run. Resume it with run.resume=true, "
                          "or pick another run.name.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class Pretrainer:
    """Owns the model, optimizer and data of one pretraining run."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, train_bank: Optional[ImageBank] = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.device = resolve_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)

        bank = train_bank if train_bank is not None else load_bank(
            cfg.data.name, cfg.data.root, "train", cfg.data.image_size, cfg.data.subset)
        if cfg.train.batch_size > len(bank):
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is larger than the dataset "
                             f"({len(bank)} images); lower it.")
        self.mean, self.std = bank.channel_stats()
        self.bank = bank.to(self.device if cfg.data.bank_device == "auto" else "cpu")
        self.views = TwoViews(cfg.augment, bank.image_size, bank.channels, self.mean, self.std).to(self.device)

        self.model: ContrastiveMethod = build_method(cfg.method, cfg.model, bank.channels).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if (self.cuda and cfg.train.channels_last) else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg.optim)

        self.monitor = (KNNMonitor(cfg, bank.image_size, self.mean, self.std, self.device)
                        if cfg.monitor.every else None)
        self.pruner = Pruner(cfg.pruning, len(self.bank), cfg.train.epochs, cfg.train.seed, self.device)
        self.epoch = 0
        self.global_step = 0
        self.samples_seen = 0

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "samples_seen": self.samples_seen,
            "config": self.cfg.model_dump(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruning": self.pruner.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.cuda else []},
            "data": {"name": self.cfg.data.name, "channels": self.bank.channels, "image_size": self.bank.image_size,
                     "num_classes": self.bank.num_classes, "mean": self.mean, "std": self.std},
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.pruner.load_state_dict(ckpt["pruning"])
        self.epoch = ckpt["epoch"]
        self.global_step = ckpt["global_step"]
        self.samples_seen = ckpt["samples_seen"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.cuda and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])

    def save_checkpoint(self) -> Path:
        folder = self.run_dir / "checkpoints"
        state = self.state_dict()
        last = folder / "last.pt"
        atomic_save(state, last)
        if self.epoch % self.cfg.train.checkpoint_every == 0:
            # A kept copy per checkpoint interval, should last.pt ever be damaged.
            atomic_save(state, folder / f"epoch_{self.epoch:04d}.pt")
        return last

    # ------------------------------------------------------------------ training

    def _autocast(self):
        if self.cuda and self.cfg.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, indices: torch.Tensor, lr: float, weights: Optional[torch.Tensor] = None) -> MethodOutput:
        """One optimizer step on the samples at ``indices`` (on the training device); the pruner observes it."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = self.bank.batch(indices.to(self.bank.device)).to(self.device, non_blocking=True)
        view0, view1 = self.views(images)
        view0 = view0.contiguous(memory_format=self.memory_format)
        view1 = view1.contiguous(memory_format=self.memory_format)
        with self._autocast():
            output = self.forward(view0, view1)
        loss = output.training_loss(weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.on_step_end()
        self.pruner.observe(indices, output, self.epoch)
        return output

    def train_epoch(self, plan: EpochPlan, bar: Optional[tqdm] = None, tracker: Optional[Tracker] = None) -> torch.Tensor:
        """Train on one epoch's plan; returns the summed per-sample loss, still on the device."""
        cfg = self.cfg
        indices = plan.indices.to(self.device)
        weights = plan.weights.to(self.device) if plan.weights is not None else None
        # Near-equal batches close to batch_size: a pruned epoch's remainder would otherwise be a
        # tail batch of a few samples taking a full-size step, which derails contrastive training.
        num_batches = max(1, round(len(plan) / cfg.train.batch_size))
        batch_indices = indices.tensor_split(num_batches)
        batch_weights = weights.tensor_split(num_batches) if weights is not None else [None] * num_batches
        loss_sum = torch.zeros((), device=self.device)
        for b in range(num_batches):
            lr = learning_rate(cfg.optim, self.epoch + b / num_batches, cfg.train.epochs)
            output = self.train_step(batch_indices[b], lr, batch_weights[b])
            loss = output.per_sample_loss.detach()
            loss_sum += loss.sum()  # stays on the device: no per-step sync
            self.global_step += 1
            self.samples_seen += loss.numel()
            if bar is not None:
                bar.update(loss.numel())
            if tracker is not None and self.global_step % cfg.train.log_every == 0:
                step_loss = loss.mean().item()
                if bar is not None:
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{step_loss:.4f}", lr=f"{lr:.3g}")
                tracker.log({"train/loss": step_loss, "train/lr": lr}, step=self.global_step)
        return loss_sum

    def run(self, tracker: Tracker, show_progress: Optional[bool] = None) -> PretrainResult:
        cfg = self.cfg
        epochs = cfg.train.epochs
        history: list[dict] = []
        started = time.perf_counter()
        images_trained = 0
        last_epoch_loss = float("nan")
        checkpoint = self.run_dir / "checkpoints" / "last.pt"
        expected_forwards = round((1.0 - self.pruner.cfg.rate if self.pruner.active else 1.0) * epochs * len(self.bank))
        bar = tqdm(total=expected_forwards, initial=min(self.samples_seen, expected_forwards), unit="img",
                   unit_scale=True, dynamic_ncols=True,
                   disable=(not show_progress) if show_progress is not None else None)
        self.model.train()
        while self.epoch < epochs:
            epoch_start = time.perf_counter()
            plan = self.pruner.plan(self.epoch)
            loss_sum = self.train_epoch(plan, bar, tracker)
            if self.cuda:
                torch.cuda.synchronize()
            epoch_seconds = time.perf_counter() - epoch_start
            last_epoch_loss = (loss_sum / len(plan)).item()
            images_trained += len(plan)
            self.epoch += 1
            record = {"epoch": self.epoch, "train/epoch_loss": last_epoch_loss, "train/epoch_seconds": epoch_seconds,
                      "train/images_per_second": len(plan) / epoch_seconds, "train/samples_seen": self.samples_seen,
                      "train/lr": learning_rate(cfg.optim, self.epoch, epochs),
                      **self.pruner.epoch_metrics(plan, self.epoch, self.samples_seen)}
            if self.monitor is not None and self.monitor.due(self.epoch, epochs) and math.isfinite(last_epoch_loss):
                record.update(self.monitor(self.model.backbone))
            history.append(record)
            tracker.log(record, step=self.global_step)
            if not math.isfinite(last_epoch_loss):
                bar.close()
                raise FloatingPointError(
                    f"Loss became {last_epoch_loss} in epoch {self.epoch} (step {self.global_step}); stopping. "
                    f"The last good checkpoint is {checkpoint}. Lower optim.lr or check the data.")
            saving = self.epoch % cfg.train.checkpoint_every == 0 or self.epoch == epochs
            if saving:
                checkpoint = self.save_checkpoint()
            if saving or "monitor/knn_top1" in record:
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
            requested_rate=self.pruner.cfg.rate if self.pruner.active else 0.0,
            achieved_rate=1.0 - self.samples_seen / (self.epoch * len(self.bank)),
            sample_forwards=self.samples_seen, full_data_forwards=self.epoch * len(self.bank), history=history)


def pretrain(cfg: PretrainConfig, recipe: str = "run", show_progress: Optional[bool] = None,
             train_bank: Optional[ImageBank] = None) -> PretrainResult:
    """Run (or resume) one pretraining job; returns where it wrote things and how it went."""
    run_dir = prepare_run_dir(cfg, recipe)
    trainer = Pretrainer(cfg, run_dir, train_bank)
    run_id_file = run_dir / "wandb_run_id"
    if cfg.run.resume:
        trainer.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=trainer.device))
        print(f"Resuming {run_dir} at epoch {trainer.epoch} (step {trainer.global_step}).")
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
                         "pruning/sample_forwards": result.sample_forwards})
    finally:
        tracker.finish()
    return result
