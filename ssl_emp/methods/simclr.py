"""SimCLR (Chen et al., 2020): one encoder, a projection head, NT-Xent over in-batch negatives."""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_emp.config import MethodConfig, ModelConfig
from ssl_emp.distributed import Shard
from ssl_emp.methods.base import ContrastiveMethod, MethodOutput
from ssl_emp.methods.losses import per_sample_ntxent_with_stats, sample_embedding, view_agreement


class SimCLR(ContrastiveMethod):
    def __init__(self, backbone: nn.Module, feature_dim: int, method_cfg: MethodConfig, model_cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, model_cfg.proj_hidden_dim, model_cfg.proj_output_dim)
        self.temperature = method_cfg.temperature
        self.gather_negatives = method_cfg.gather_negatives

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> MethodOutput:
        # Both views in one pass: one kernel launch per layer, and BatchNorm sees all 2B images as in SimCLR.
        z0, z1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        agreement, embedding = view_agreement(z0, z1), sample_embedding(z0, z1)
        if shard is not None and self.gather_negatives:
            # Every rank's embeddings serve as negatives; each rank keeps the rows (losses) of its own samples,
            # which are then exactly those of a single process holding the whole global batch.
            loss, entropy, positive_prob = per_sample_ntxent_with_stats(shard.gather(z0), shard.gather(z1),
                                                                        self.temperature)
            return MethodOutput(loss[shard.local], agreement, entropy[shard.local], positive_prob[shard.local], embedding)
        loss, entropy, positive_prob = per_sample_ntxent_with_stats(z0, z1, self.temperature)
        return MethodOutput(loss, agreement, entropy, positive_prob, embedding)
