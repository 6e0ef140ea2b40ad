"""What a run's checkpoint holds, and how a run is put back from one: its counters, the method's and the
optimizer's state, the pruner's score table, every rank's RNG, and where inside an epoch it stopped."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ssl_emp.checkpoint import FORMAT, CheckpointError, atomic_save
from ssl_emp.distributed import restore_rng, rng_states
from ssl_emp.engine.interrupt import EpochPosition
from ssl_emp.engine.parts import RunCounters, RunSettings, TrainParts


def files_digest(source) -> Optional[str]:
    """A digest of the files a folder's data holds, in order, relative to the folder (so a moved folder still
    matches); None for a named dataset. The score table is indexed by place in this list, so a file that broke,
    healed or appeared between sittings would shift every index after it, with the count unchanged."""
    paths = list(getattr(source, "paths", None) or [])
    if not paths:
        return None
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return hashlib.sha1("\n".join(os.path.relpath(p, root) for p in paths).encode()).hexdigest()


def run_state(parts: TrainParts, settings: RunSettings, counts: RunCounters, position: Optional[EpochPosition]) -> dict:
    """The checkpoint's dict. Every rank calls it: the RNG states are gathered across ranks."""
    return {
        "format": FORMAT,
        **counts.state_dict(),
        "config": settings.run_config,
        "model": parts.method.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "pruning": parts.pruner.state_dict(),
        "rng": rng_states(settings.ctx, settings.device),
        "world_size": settings.ctx.world_size,
        "data": settings.data_info,
        "data_files": settings.data_files,
        "batch_size": settings.batch_size,
        "position": position.state_dict() if position is not None else None,
    }


def restore_run_state(
    ckpt: dict, parts: TrainParts, settings: RunSettings, counts: RunCounters
) -> Optional[EpochPosition]:
    """Load ``ckpt`` into the parts and counters; returns where inside an epoch the run stopped (None: at an
    epoch's end). A checkpoint of another model or dataset is refused with what does not fit."""
    method, pruner = parts.method, parts.pruner
    try:
        method.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        model = settings.run_config.get("model", {}).get("backbone", type(method).__name__)
        raise CheckpointError(
            f"The checkpoint's weights do not fit this run's model "
            f"({model}, {type(method).__name__.lower()}): {str(exc)[:600]}"
        ) from None
    saved_samples = ckpt["pruning"]["table"]["scores"].numel()
    if saved_samples != pruner.num_samples:
        raise CheckpointError(
            f"The checkpoint's score table covers {saved_samples} samples but this run's dataset has "
            f"{pruner.num_samples}."
        )
    saved_batch = ckpt.get("batch_size")
    if saved_batch and saved_batch != settings.batch_size:  # the steps inside an epoch are counted in batches
        raise CheckpointError(
            f"This run trained with batches of {saved_batch}; resumed as given it would train with "
            f"{settings.batch_size} (a batch fitted to what the pruned epochs keep changes with train.epochs). "
            f"Give train.batch_size={saved_batch} to go on as it began."
        )
    saved_files, files = ckpt.get("data_files"), settings.data_files
    if saved_files and files and saved_files != files:
        raise CheckpointError(
            f"The folder's readable files are not the ones this run began with ({pruner.num_samples} then and now, "
            "but not the same files: one that broke, healed or was added shifts every sample's place in the "
            "score table). Restore the folder as it was (the run's unreadable_files.txt lists what was left "
            "out), or start a new run."
        )
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    pruner.load_state_dict(ckpt["pruning"])
    counts.load_state_dict(ckpt)
    ctx, device = settings.ctx, settings.device
    restore_rng(ckpt["rng"], ckpt.get("world_size", 1), ctx, device, reseed=settings.seed + counts.epoch)
    return EpochPosition.from_state(ckpt.get("position"), device)


def save_run_state(state: dict, settings: RunSettings, epoch: int, inside_epoch: bool) -> Path:
    """Rank 0 writes ``checkpoints/last.pt`` (atomically), and a kept copy every ``checkpoint_every`` epochs."""
    folder = settings.run_dir / "checkpoints"
    last = folder / "last.pt"
    if settings.ctx.is_main:
        atomic_save(state, last)
        if epoch % settings.checkpoint_every == 0 and not inside_epoch:
            atomic_save(state, folder / f"epoch_{epoch:04d}.pt")
    return last
