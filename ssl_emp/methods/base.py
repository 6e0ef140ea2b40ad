"""What every method is (contrastive or self-distilling): a backbone plus what it trains on top, returning
per-sample statistics."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.pruning import SampleStats


class SelfSupervisedMethod(nn.Module):
    """A backbone plus whatever the method trains on top of it.

    ``forward`` returns the pruning engine's :class:`~ssl_emp.pruning.SampleStats` for this rank's samples:
    the per-sample loss (with its graph) and, detached, the views' agreement, the contrastive rows' entropy
    and positive probability, and the sample's embedding. Everything stays on the device, so a scorer reads
    it without a host round trip; ``stats.training_loss(weights)`` is the loss to back-propagate.
    """

    backbone: nn.Module

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> SampleStats:
        """Per-sample outputs for this rank's samples. ``shard`` (DDP only) says where they sit in the global
        batch, so a method can gather embeddings across ranks."""
        raise NotImplementedError  # pragma: no cover - interface

    def set_progress(self, fraction: float) -> None:
        """Where the run stands, from 0 to 1: the fraction of its planned compute done, which the learning rate
        follows too. The trainer calls it before each step; a method whose settings follow a schedule over the
        run (BYOL's and DINO's teacher momentum, DINO's teacher temperature) reads it. A hand-written loop that
        never calls it keeps those settings at their starting values."""

    def before_optimizer_step(self) -> None:
        """Hook between the backward pass and the optimizer step (DINO drops its last layer's gradients here)."""

    def on_step_end(self) -> None:
        """Hook after each optimizer step (momentum encoders update here)."""


def ddp_ignored_buffer_names(model: nn.Module) -> list[str]:
    """The fully qualified names of the buffers in ``model`` that every rank keeps identical by construction (a
    module lists its own in ``ddp_identical_buffers``: MoCo's queue, DINO's center), so that DDP need not
    broadcast them from rank 0 at each step."""
    return [
        f"{name}.{buffer}" if name else buffer
        for name, module in model.named_modules()
        for buffer in getattr(module, "ddp_identical_buffers", ())
    ]


ContrastiveMethod = SelfSupervisedMethod  # its name before BYOL and DINO (not contrastive) joined; kept for imports
