"""What a run reports, apart from training: each finished epoch's metrics record (W&B and ``metrics.jsonl``), the
progress line it prints, and the :class:`PretrainResult` a finished run returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ssl_emp.engine.parts import RunCounters, RunSettings, TrainParts
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
    unreadable_files: int = 0  # image files left out as unreadable (listed in the run folder)
    is_main: bool = True  # False on DDP ranks other than 0, which print nothing
    num_classes: int = 0  # of the pretraining data; 0 where its images have no labels (an unlabelled folder)
    already_finished: bool = False  # resumed at its end (run.resume=auto on a finished run): nothing was trained
    history: list[dict] = field(default_factory=list)
    budget: Optional[str] = None  # who got the pruned epochs' forwards, in one line (Pruner.describe_budget)


def epoch_record(
    parts: TrainParts,
    counts: RunCounters,
    plan: EpochPlan,
    lr: float,
    epoch_loss: float,
    epoch_seconds: float,
    trained: int,
    finished: bool,
) -> dict[str, Any]:
    """The metrics of the epoch just finished (``counts.epoch``; ``trained`` samples in ``epoch_seconds``, ending at
    learning rate ``lr``), with the pruner's, the monitor's where it is due, and the data's."""
    pruner, source, monitor = parts.pruner, parts.source, parts.monitor
    record: dict[str, Any] = {
        "epoch": counts.epoch,
        "train/epoch_loss": epoch_loss,
        "train/epoch_seconds": epoch_seconds,
        "train/images_per_second": trained / epoch_seconds,
        "train/samples_seen": counts.samples_seen,
        "train/lr": lr,
        **pruner.epoch_metrics(plan, counts.epoch, counts.samples_seen, counts.unreadable_skips),
    }
    if monitor is not None and monitor.due(counts.epoch, finished) and math.isfinite(epoch_loss):
        record.update(monitor(parts.method.backbone))
    if pruner.embeddings is not None:  # the clean forwards' time, beside the forwards the pruner counts
        record["pruning/embedding_seconds"] = counts.embedding_seconds
    if counts.skipped_steps:
        record["train/skipped_steps"] = counts.skipped_steps
    if source.drops_unreadable:
        record["data/unreadable_files"] = source.unreadable_count()
        record["data/unreadable_skips"] = counts.unreadable_skips
    return record


def epoch_line(
    epoch: int, epochs: int, record: dict[str, Any], kept: int, num_samples: int, checkpoint: Optional[Path]
) -> str:
    """The line printed after an epoch; ``checkpoint`` where one was saved."""
    knn = f"  kNN top-1 {record['monitor/knn_top1']:.4f}" if "monitor/knn_top1" in record else ""
    return (
        f"epoch {epoch}/{epochs}  loss {record['train/epoch_loss']:.4f}{knn}  "
        f"{record['train/images_per_second']:.0f} img/s  kept {kept}/{num_samples}"
        + (f"  checkpoint {checkpoint}" if checkpoint is not None else "")
    )


def last_epoch_loss(run_dir: Path) -> float:
    """The last epoch loss a run's ``metrics.jsonl`` holds (nan if none)."""
    import json

    path, loss = run_dir / "metrics.jsonl", float("nan")
    if path.is_file():
        for line in path.read_text().splitlines():
            loss = json.loads(line).get("train/epoch_loss", loss)
    return loss


def run_result(
    parts: TrainParts,
    counts: RunCounters,
    settings: RunSettings,
    checkpoint: Path,
    final_loss: float,
    seconds: float,
    images_trained: int,
    history: list[dict],
) -> PretrainResult:
    full_data_forwards = counts.epoch * len(parts.source)
    return PretrainResult(
        run_dir=settings.run_dir,
        checkpoint=checkpoint,
        epochs_done=counts.epoch,
        global_step=counts.global_step,
        final_loss=final_loss,
        seconds=seconds,
        images_per_second=images_trained / seconds if seconds > 0 else float("nan"),
        requested_rate=parts.pruner.requested_rate,
        achieved_rate=achieved_rate(counts.forwards_spent, full_data_forwards),
        sample_forwards=counts.samples_seen,
        full_data_forwards=full_data_forwards,
        skipped_steps=counts.skipped_steps,
        unreadable_skips=counts.unreadable_skips,
        is_main=settings.ctx.is_main,
        num_classes=parts.source.num_classes,
        history=history,
        budget=parts.pruner.describe_budget(counts.epoch),
    )
