"""BYOL (Grill et al., 2020): an online network predicts a momentum teacher's projection of the other view.

lightly provides the projection and prediction heads and the momentum update (through
:class:`~ssl_emp.methods.teacher.MomentumTeacherMethod`). The loss is lightly's negative cosine similarity,
written out per sample (``losses.per_sample_negative_cosine``) because pruning needs one loss per sample.
"""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.methods.losses import per_sample_negative_cosine, sample_embedding, view_agreement
from ssl_emp.methods.teacher import MomentumTeacherMethod, frozen_copy
from ssl_emp.pruning import SampleStats


class BYOL(MomentumTeacherMethod):
    """``BYOL(backbone, feature_dim)``: the online network is ``backbone``, lightly's projection head to
    ``proj_dim`` and its prediction head; the target network is the online backbone and projection head's moving
    average, whose weight rises on a cosine from ``momentum`` to ``momentum_end`` over the run
    (:meth:`set_progress` says where the run stands). No negatives, so no dependence on the batch's size beyond
    BatchNorm's."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        momentum: float = 0.99,
        momentum_end: float = 1.0,
    ):
        super().__init__(momentum, momentum_end)
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, proj_hidden_dim, proj_dim)
        self.prediction_head = BYOLPredictionHead(proj_dim, proj_hidden_dim, proj_dim)
        self.backbone_momentum = frozen_copy(backbone)
        self.projection_head_momentum = frozen_copy(self.projection_head)

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> SampleStats:
        # Both views in one pass, as for SimCLR; nothing is exchanged between ranks (no negatives).
        z0, z1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        p0, p1 = self.prediction_head(torch.cat([z0, z1])).chunk(2)
        with torch.no_grad():
            t0, t1 = self.projection_head_momentum(self.backbone_momentum(torch.cat([view0, view1]))).chunk(2)
        loss = per_sample_negative_cosine(p0, p1, t0, t1)
        # A prediction orthogonal to its target scores 0 whatever the batch: the loss needs no chance correction.
        return SampleStats(
            loss,
            view_agreement(z0, z1),
            embedding=sample_embedding(z0, z1),
            chance_loss=torch.zeros_like(loss, dtype=torch.float32).detach(),
        )
