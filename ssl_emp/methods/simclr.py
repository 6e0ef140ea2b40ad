"""SimCLR (Chen et al., 2020): one encoder, a projection head, NT-Xent over in-batch negatives."""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.methods.base import SelfSupervisedMethod
from ssl_emp.methods.losses import chance_loss, per_sample_ntxent_with_stats, sample_embedding, view_agreement
from ssl_emp.pruning import SampleStats


class SimCLR(SelfSupervisedMethod):
    """``SimCLR(backbone, feature_dim)``: ``backbone`` maps images to ``feature_dim`` features; lightly's
    projection head maps those to ``proj_dim``. ``gather_negatives`` (DDP): every rank's embeddings serve as
    negatives."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.5,
        gather_negatives: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, proj_hidden_dim, proj_dim)
        self.temperature = temperature
        self.gather_negatives = gather_negatives

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> SampleStats:
        # Both views in one pass: one kernel launch per layer, and BatchNorm sees all 2B images as in SimCLR.
        z0, z1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        agreement, embedding = view_agreement(z0, z1), sample_embedding(z0, z1)
        if shard is not None and self.gather_negatives:
            # Every rank's embeddings serve as negatives; each rank keeps the rows (losses) of its own samples,
            # which are then exactly those of a single process holding the whole global batch.
            loss, entropy, positive_prob = per_sample_ntxent_with_stats(
                shard.gather(z0), shard.gather(z1), self.temperature
            )
            local = shard.local
            return SampleStats(
                loss[local],
                agreement,
                entropy[local],
                positive_prob[local],
                embedding,
                chance_loss(agreement, 2 * shard.total - 1),
            )
        loss, entropy, positive_prob = per_sample_ntxent_with_stats(z0, z1, self.temperature)
        return SampleStats(loss, agreement, entropy, positive_prob, embedding, chance_loss(loss, 2 * len(z0) - 1))
