"""Optimizer and learning-rate schedule from the config."""

from __future__ import annotations

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_warmup_schedule
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


def learning_rate(cfg: OptimConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay, a pure function of the step so a resumed run continues it exactly."""
    warmup_steps = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps)
    return cosine_warmup_schedule(
        step=min(step, total_steps), max_steps=total_steps, start_value=cfg.lr,
        end_value=cfg.lr * cfg.min_lr_fraction, warmup_steps=warmup_steps, warmup_start_value=0.0)
