"""Optimizer and learning-rate schedule from the config."""

from __future__ import annotations

import math

import torch
from lightly.utils.lars import LARS
from torch import nn

from ssl_emp.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and normalisation parameters get no weight decay (lightly's LARS also skips its trust ratio where weight decay is 0)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"Unknown optimizer '{cfg.name}'. Known: sgd, lars, adamw.")


def learning_rate(cfg: OptimConfig, progress: float, total_epochs: int) -> float:
    """Linear warm-up then cosine decay over training progress measured in epochs (a float).

    Progress rather than step count: a pruned epoch has fewer steps, and the schedule must still span the
    run. A pure function of progress, so a resumed run continues it exactly.
    """
    progress = min(progress, float(total_epochs))
    warmup = min(cfg.warmup_epochs, float(total_epochs))
    if progress < warmup:
        return cfg.lr * progress / warmup
    span = max(total_epochs - warmup, 1e-12)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / span))
    end = cfg.lr * cfg.min_lr_fraction
    return end + (cfg.lr - end) * cosine
