"""Run directories and the rules for resuming one: which settings a resumed run may not change, and what a new
epoch count shifts. Settings arrive as the plain tree a run saves (``config.yaml``, the checkpoint's
``config``), so these rules need no config package."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

from ssl_emp.distributed import DistContext
from ssl_emp.engine.optim import WarmupCosine, compute_progress
from ssl_emp.methods.settings import shape_settings
from ssl_emp.pruning import Pruner


class RunDirError(RuntimeError):
    """The run directory clashes with what was asked (exists without resume, or missing with it)."""


def prepare_run_dir(
    out_dir: str, name: Optional[str], resume: Union[bool, str], recipe: str, ctx: DistContext = DistContext()
) -> tuple[Path, bool]:
    """The run directory and whether the run resumes in it: ``resume`` true, or ``"auto"`` where the directory has a
    checkpoint. Checked on every rank (so all fail, or all resume, alike); rank 0 creates it."""
    if ctx.enabled and not name:
        raise RunDirError("Under torchrun set run.name: ranks would otherwise each pick a timestamped directory.")
    if resume == "auto" and not name:
        raise RunDirError(
            "run.resume=auto resumes the run named by run.name when it has a checkpoint; set "
            "run.name (a timestamped directory is new each time)."
        )
    run_dir = Path(out_dir) / (name or f"{recipe}-{datetime.now():%Y%m%d-%H%M%S}")
    has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file()
    if resume is True and not has_checkpoint:
        raise RunDirError(
            f"run.resume=true but '{run_dir}' has no checkpoints/last.pt to resume from "
            "(run.resume=auto starts a run where there is none)."
        )
    if not resume and has_checkpoint:
        raise RunDirError(
            f"Run directory '{run_dir}' already holds a run. Resume it with run.resume=true (or "
            "run.resume=auto: resume where there is a checkpoint, else start), or pick another run.name."
        )
    ctx.barrier()  # every rank has looked before rank 0 writes anything
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    return run_dir, has_checkpoint and bool(resume)


def resume_fixed() -> tuple[str, ...]:
    """Settings a run cannot change when it resumes: they fix the shapes of the saved state or the dataset it
    indexes. A method's own are those its settings declare with shape=True (ssl_emp.methods.settings), read when
    asked, so that a method registered at run time is covered too."""
    methods = tuple(f"method.{name}" for name in shape_settings())
    return ("data.name", "data.subset", "data.image_size", "model", "method.name", *methods)


def _flat(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def check_resume_compatible(saved: dict, current: dict, run_dir: Path) -> None:
    before, now = dict(_flat(saved)), dict(_flat(current))
    changed = [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(now)
        if any(key == fixed or key.startswith(fixed + ".") for fixed in resume_fixed())
        and before.get(key) != now.get(key)
    ]
    if changed:
        raise RunDirError(
            f"Cannot resume '{run_dir}' with this config: it changes settings fixed for the life of a "
            f"run ({'; '.join(changed)}). Resume with the run's own config.yaml, or start a new run."
        )


def lr_at(settings: dict, pruner: Pruner, epoch: int, forwards_done: int) -> float:
    """The learning rate a run's settings give where it stands (as the trainer computes it)."""
    optim, train = settings["optim"], settings["train"]
    schedule = WarmupCosine(optim["lr"], train["epochs"], optim["warmup_epochs"], optim["min_lr_fraction"])
    progress = compute_progress(train["epochs"], forwards_done, pruner.planned_forwards(), train.get("max_forwards"))
    return schedule(epoch if progress is None else progress)


def schedule_shift(saved: dict, current: dict, epoch: int, num_samples: int, forwards_done: int) -> list[str]:
    """What changes, from ``epoch`` on, when a run saved with ``saved`` resumes with another ``train.epochs``:
    the learning rate, the pruning schedule's annealing window and per-epoch rate are functions of it."""
    before, after = saved["train"]["epochs"], current["train"]["epochs"]
    seed = current["train"]["seed"]
    with warnings.catch_warnings():  # a shortened annealing window shows in the shifts below
        warnings.simplefilter("ignore")
        old = Pruner(num_samples, before, seed=seed, **saved["pruning"])
        new = Pruner(num_samples, after, seed=seed, **current["pruning"])
    shifts = [
        f"the learning rate at epoch {epoch} goes from {lr_at(saved, old, epoch, forwards_done):.4g} to "
        f"{lr_at(current, new, epoch, forwards_done):.4g} (cosine over {after} epochs, not {before})"
    ]

    def window(pruner: Pruner, epochs: int) -> str:
        first = pruner.first_annealed_epoch + 1
        return f"{first}-{epochs}" if first <= epochs else "none"

    if old.active and window(old, before) != window(new, after):
        shifts.append(f"the full-data annealing epochs move from {window(old, before)} to {window(new, after)}")
    if old.active and not old.published_rule:
        shifts.append(
            f"each pruned epoch skips {new.epoch_rate:.3f} of the data, not {old.epoch_rate:.3f}, so "
            f"that the whole run skips pruning.rate={current['pruning']['rate']}"
        )
    return shifts


def check_resume_epochs(
    saved: dict, current: dict, run_dir: Path, epoch: int, num_samples: int, forwards_done: int
) -> list[str]:
    """Refuse a new ``train.epochs`` on resume unless ``run.extend=true``; returns what it shifts (to print)."""
    saved_epochs = saved["train"]["epochs"]
    if saved_epochs == current["train"]["epochs"]:
        return []
    # This run's settings but the old epoch count: the shift the epoch count alone makes.
    shifts = schedule_shift(
        {**current, "train": {**current["train"], "epochs": saved_epochs}}, current, epoch, num_samples, forwards_done
    )
    if not current["run"]["extend"]:
        raise RunDirError(
            f"Cannot resume '{run_dir}' with train.epochs={current['train']['epochs']}: it was started with "
            f"train.epochs={saved_epochs}, and the schedules depend on it: "
            + "; ".join(shifts)
            + f". Pass run.extend=true to accept that, or resume with train.epochs={saved_epochs}."
        )
    return shifts
