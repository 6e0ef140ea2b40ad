"""Optimizers by name and the learning-rate schedule, from plain keyword arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_schedule
from torch import nn

OPTIMIZERS = ("sgd", "lars", "adamw")


def _decayed(param: torch.Tensor) -> bool:
    return param.ndim > 1


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and normalisation parameters get no weight decay (lightly's LARS also skips its trust ratio where
    weight decay is 0)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if _decayed(param) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Give the decayed parameters' groups (:func:`param_groups`' rule) this weight decay; the others keep 0."""
    for group in optimizer.param_groups:
        if group["params"] and _decayed(group["params"][0]):
            group["weight_decay"] = weight_decay


def build_optimizer(
    model: nn.Module, name: str = "sgd", *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"Unknown optimizer '{name}'. Known: {', '.join(OPTIMIZERS)}.")


def compute_progress(
    epochs: int, forwards_done: int, planned_forwards: Optional[int], max_forwards: Optional[int] = None
) -> Optional[float]:
    """Where a run stands on its schedule, in epochs: the fraction of its planned sample-forwards done, times
    ``epochs``. Schedules follow the compute, not the epoch count, so runs at different pruning rates, and a
    full-data run cut to the same compute (``max_forwards``), walk the same curve per unit of compute and end it
    together. None where the compute cannot be planned (InfoBatch's published rule): the schedule then follows
    the epochs."""
    if planned_forwards is None:
        return None
    planned = min(planned_forwards, max_forwards or planned_forwards)
    return epochs * min(forwards_done, planned) / planned


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up then cosine decay over training progress measured in epochs (a float; the trainer maps the
    fraction of planned compute done onto them, :func:`compute_progress`): ``schedule(progress)`` is the
    learning rate there.

    Progress rather than step count: a pruned epoch has fewer steps, and the schedule must still span the
    run. A pure function of progress, so a resumed run continues it exactly.
    """

    lr: float
    epochs: float
    warmup_epochs: float = 0.0
    min_lr_fraction: float = 0.0

    def __call__(self, progress: float) -> float:
        progress = min(progress, float(self.epochs))
        warmup = min(self.warmup_epochs, float(self.epochs))
        if progress < warmup:
            return self.lr * progress / warmup
        span = max(self.epochs - warmup, 1e-12)
        cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / span))
        end = self.lr * self.min_lr_fraction
        return end + (self.lr - end) * cosine


@dataclass(frozen=True)
class CosineRamp:
    """From ``start`` to ``end`` on a half cosine over training progress measured in epochs (e.g. DINO's weight
    decay, 0.04 -> 0.4): like :class:`WarmupCosine`, a pure function of progress, so a resumed run continues it
    exactly."""

    start: float
    end: float
    epochs: float

    def __call__(self, progress: float) -> float:
        # lightly's cosine runs over steps 0 .. max_steps - 1: with max_steps 2, step is the fraction of the run.
        return cosine_schedule(min(progress / self.epochs, 1.0), 2, self.start, self.end)
