"""What every contrastive method returns, and how its training loss is formed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ssl_emp.distributed import Shard


@dataclass
class MethodOutput:
    """Per-sample results of one forward pass over B samples (two views each).

    ``per_sample_loss`` carries the graph; ``agreement`` (cosine of the two views'
    embeddings) is detached. Both stay on the device: a scorer reads them without
    a host round trip.
    """

    per_sample_loss: torch.Tensor  # [B]
    agreement: torch.Tensor  # [B]
    softmax_entropy: Optional[torch.Tensor] = None  # [B] entropy of the sample's contrastive softmax rows
    positive_prob: Optional[torch.Tensor] = None  # [B] probability those rows give the sample's positive
    embedding: Optional[torch.Tensor] = None  # [B, d] detached, unit norm: where the sample sits (EMP ``drift``)

    def training_loss(self, weights: Optional[torch.Tensor] = None, count: Optional[float] = None) -> torch.Tensor:
        """``sum(w_i * loss_i) / count`` (count defaults to the batch size: the weighted mean).

        Pruning selectors use the weights to keep the loss unbiased. Under DDP each rank passes
        ``count = global batch / world size``, so that DDP's gradient average is the global batch mean.
        """
        loss = self.per_sample_loss if weights is None else weights.to(self.per_sample_loss.dtype) * self.per_sample_loss
        return loss.mean() if count is None else loss.sum() / count


class ContrastiveMethod(nn.Module):
    """A backbone plus whatever the method trains on top of it."""

    backbone: nn.Module

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> MethodOutput:
        """Per-sample outputs for this rank's samples. ``shard`` (DDP only) says where they sit in the global
        batch, so a method can gather embeddings across ranks."""
        raise NotImplementedError  # pragma: no cover - interface

    def on_step_end(self) -> None:
        """Hook after each optimizer step (momentum encoders update here)."""
