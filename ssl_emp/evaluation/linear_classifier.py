"""A linear classifier on frozen features, and top-k accuracy of logits: the linear probe's parts, and the
accuracy the fine-tuning command reports."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssl_emp.progress import Progress


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (topk == labels[:, None]).any(dim=1).float().mean().item()


def logit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``top1``, and ``top5`` where there are at least 10 classes."""
    result = {"top1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] >= 10:
        result["top5"] = topk_accuracy(logits, labels, 5)
    return result


def train_linear_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    progress: str = "off",
) -> nn.Module:
    """AdamW with cosine decay on standardised features; the returned module standardises its input itself.
    ``progress``: a :class:`~ssl_emp.progress.Progress` mode (off, auto, bar, lines)."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    x = (train_x - mean) / std
    shown = Progress(
        "classifier epoch", epochs, epochs * len(x), mode=progress, every_seconds=30, item="sample", unit_lines=False
    )
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        starts = range(0, len(x), batch_size)
        shown.start(epoch + 1, len(starts))
        for step, start in enumerate(starts, 1):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(linear(x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            shown.step(step, len(idx), loss.detach())
    shown.close()
    shown.line(f"classifier: {epochs} epochs over {len(x)} features")

    class Standardised(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.linear = linear

        def forward(self, features):
            return self.linear((features - self.mean) / self.std)

    return Standardised().eval()
