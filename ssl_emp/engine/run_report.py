"""What a run reports, apart from training: each finished epoch's metrics record (W&B and ``metrics.jsonl``), the
progress line it prints, and the :class:`PretrainResult` a finished run returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ssl_emp.pruning import EpochPlan, achieved_rate


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
    skipped_steps: int = 0  # non-finite steps skipped (train.nonfinite=skip)
    unreadable_skips: int = 0  # planned samples not trained because their file was unreadable: not pruning
    is_main: bool = True  # False on DDP ranks other than 0, which print nothing
    num_classes: int = 0  # of the pretraining data; 0 where its images have no labels (an unlabelled folder)
    history: list[dict] = field(default_factory=list)


def epoch_record(
    trainer, plan: EpochPlan, epoch_loss: float, epoch_seconds: float, trained: int, finished: bool
) -> dict[str, Any]:
    """The metrics of the epoch the trainer has just finished (``trained`` samples in ``epoch_seconds``)."""
    record: dict[str, Any] = {
        "epoch": trainer.epoch,
        "train/epoch_loss": epoch_loss,
        "train/epoch_seconds": epoch_seconds,
        "train/images_per_second": trained / epoch_seconds,
        "train/samples_seen": trainer.samples_seen,
        "train/lr": trainer.schedule(trainer.progress()),
        **trainer.pruner.epoch_metrics(plan, trainer.epoch, trainer.samples_seen, trainer.unreadable_skips),
    }
    if trainer.monitor is not None and trainer.monitor.due(trainer.epoch, finished) and math.isfinite(epoch_loss):
        record.update(trainer.monitor(trainer.model.backbone))
    if trainer.pruner.embeddings is not None:  # the clean forwards' time, beside the forwards the pruner counts
        record["pruning/embedding_seconds"] = trainer.embedding_seconds
    if trainer.skipped_steps:
        record["train/skipped_steps"] = trainer.skipped_steps
    if trainer.source.drops_unreadable:
        record["data/unreadable_files"] = trainer.source.unreadable_count()
        record["data/unreadable_skips"] = trainer.unreadable_skips
    return record


def epoch_line(trainer, record: dict[str, Any], kept: int, checkpoint: Optional[Path]) -> str:
    """The line printed after an epoch; ``checkpoint`` where one was saved."""
    knn = f"  kNN top-1 {record['monitor/knn_top1']:.4f}" if "monitor/knn_top1" in record else ""
    return (
        f"epoch {trainer.epoch}/{trainer.epochs}  loss {record['train/epoch_loss']:.4f}{knn}  "
        f"{record['train/images_per_second']:.0f} img/s  kept {kept}/{len(trainer.source)}"
        + (f"  checkpoint {checkpoint}" if checkpoint is not None else "")
    )


def run_result(
    trainer, checkpoint: Path, final_loss: float, seconds: float, images_trained: int, history: list[dict]
) -> PretrainResult:
    full_data_forwards = trainer.epoch * len(trainer.source)
    return PretrainResult(
        run_dir=trainer.run_dir,
        checkpoint=checkpoint,
        epochs_done=trainer.epoch,
        global_step=trainer.global_step,
        final_loss=final_loss,
        seconds=seconds,
        images_per_second=images_trained / seconds if seconds > 0 else float("nan"),
        requested_rate=trainer.pruner.requested_rate,
        achieved_rate=achieved_rate(trainer.forwards_spent, full_data_forwards),
        sample_forwards=trainer.samples_seen,
        full_data_forwards=full_data_forwards,
        skipped_steps=trainer.skipped_steps,
        unreadable_skips=trainer.unreadable_skips,
        is_main=trainer.ctx.is_main,
        num_classes=trainer.source.num_classes,
        history=history,
    )
