"""SimSiam (Chen and He, 2021): one network, a predictor, and a stop-gradient; no negatives, no momentum teacher.

lightly provides the projection and prediction heads. The loss is lightly's negative cosine similarity of each
view's prediction against the other view's projection with its gradient stopped, symmetrised; it is written out
per sample (``losses.per_sample_negative_cosine``, BYOL's form with the online projections as targets) because
pruning needs one loss per sample.
"""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.methods.base import SelfSupervisedMethod
from ssl_emp.methods.losses import per_sample_negative_cosine, sample_embedding, view_agreement
from ssl_emp.pruning import SampleStats


class SimSiam(SelfSupervisedMethod):
    """``SimSiam(backbone, feature_dim)``: ``backbone``, lightly's projection head to ``proj_dim`` and its
    prediction head (a bottleneck of ``prediction_hidden_dim``). Each view's prediction is pulled towards the
    other view's projection, which carries no gradient."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 2048,
        prediction_hidden_dim: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(feature_dim, proj_hidden_dim, proj_dim)
        self.prediction_head = SimSiamPredictionHead(proj_dim, prediction_hidden_dim or max(1, proj_dim // 4), proj_dim)

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> SampleStats:
        # Both views in one pass; nothing is exchanged between ranks (no negatives).
        z0, z1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        p0, p1 = self.prediction_head(torch.cat([z0, z1])).chunk(2)
        loss = per_sample_negative_cosine(p0, p1, z0, z1)  # the targets z are detached inside: the stop-gradient
        # A prediction orthogonal to its target scores 0 whatever the batch: the loss needs no chance correction.
        return SampleStats(
            loss,
            view_agreement(z0, z1),
            embedding=sample_embedding(z0, z1),
            chance_loss=torch.zeros_like(loss, dtype=torch.float32).detach(),
        )
