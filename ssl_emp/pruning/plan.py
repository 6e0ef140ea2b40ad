"""An epoch plan: which samples are trained on this epoch, with what loss weight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class EpochPlan:
    indices: torch.Tensor  # int64 [K], global indices, on the CPU
    weights: Optional[torch.Tensor] = None  # float [K] aligned with indices; None means all 1
    info: dict = field(default_factory=dict)  # selector-specific numbers to log (InfoBatch's r, ...)

    def __len__(self) -> int:
        return self.indices.numel()

    def head(self, count: int) -> "EpochPlan":
        """The first ``count`` samples of the plan (a run whose compute budget ends within this epoch)."""
        weights = self.weights[:count] if self.weights is not None else None
        return EpochPlan(self.indices[:count], weights, self.info)

    def shuffled(self, generator: torch.Generator) -> "EpochPlan":
        order = torch.randperm(len(self), generator=generator)
        weights = self.weights[order] if self.weights is not None else None
        return EpochPlan(self.indices[order], weights, self.info)


def near_equal_batches(indices: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    """``indices`` cut into the number of batches nearest ``len / batch_size``, of near-equal sizes (they differ by
    at most one). A pruned epoch's remainder would otherwise be a tail batch of a few samples taking a full-size
    step, which derails contrastive training (and a batch of one breaks BatchNorm)."""
    if indices.numel() == 0:
        return ()
    return indices.tensor_split(max(1, round(indices.numel() / batch_size)))
