"""What a run that cannot go on says: where it stopped, what was kept, and what to change."""

from __future__ import annotations

from pathlib import Path

from ssl_emp.data import UnreadableImageError


def unreadable_stop(exc: Exception, epoch: int, checkpoint: Path) -> UnreadableImageError:
    kept = (
        f"its last checkpoint ({checkpoint}) is intact"
        if checkpoint.is_file()
        else "no checkpoint had been written yet"
    )
    return UnreadableImageError(
        f"{exc}. The run stopped in epoch {epoch + 1}; {kept}. Remove or replace the file, or set "
        "data.skip_unreadable=true to skip such files (they are counted as data/unreadable_files)."
    )


def nonfinite_stop(loss: float, step: int, epoch: int, checkpoint: Path) -> FloatingPointError:
    return FloatingPointError(
        f"The training loss became {loss} at step {step} (epoch {epoch}); the run stopped without saving, so the "
        f"last good checkpoint is {checkpoint}. Lower optim.lr, check the data, or set train.nonfinite=skip to "
        "skip such steps (they are counted as train/skipped_steps)."
    )
