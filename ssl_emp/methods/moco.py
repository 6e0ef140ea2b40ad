"""MoCo v2 (Chen et al., 2020): a momentum key encoder, a queue of negatives, symmetric InfoNCE.

lightly provides the projection head and the momentum update. The queue is the project's own device-side
ring buffer (``queue.KeyQueue``: lightly's ``MemoryBankModule`` syncs with the host every step), and the
loss is written out per sample (``losses.per_sample_infonce_with_stats``) because pruning needs one loss per
sample, which lightly's ``NTXentLoss`` averages away.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from ssl_emp.config import MethodConfig, ModelConfig
from ssl_emp.distributed import Shard
from ssl_emp.methods.base import ContrastiveMethod, MethodOutput
from ssl_emp.methods.losses import per_sample_infonce_with_stats, sample_embedding, view_agreement
from ssl_emp.methods.queue import KeyQueue


class MoCo(ContrastiveMethod):
    def __init__(self, backbone: nn.Module, feature_dim: int, method_cfg: MethodConfig, model_cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(feature_dim, model_cfg.proj_hidden_dim, model_cfg.proj_output_dim)
        # The key encoder: same architecture, no gradients, an exponential moving average of the query encoder.
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.queue = KeyQueue(method_cfg.queue_size, model_cfg.proj_output_dim)
        self.temperature = method_cfg.temperature
        self.momentum = method_cfg.momentum

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> MethodOutput:
        q0, q1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        with torch.no_grad():
            # Both views go through the key encoder in one batch. (MoCo's shuffled BN counters a BN shortcut
            # across GPUs; with one batch per device and an EMA key encoder it is left out, as in lightly.)
            k0, k1 = self.projection_head_momentum(self.backbone_momentum(torch.cat([view0, view1]))).chunk(2)
            # Negatives are the queue as it was before this batch; then this batch's keys are enqueued: under
            # DDP every rank's keys, in global batch order, so the queue stays identical on all ranks.
            keys = torch.cat([k0, k1]).float()
            if shard is not None:
                keys = torch.cat([shard.gather_detached(k0.float()), shard.gather_detached(k1.float())])
            negatives = self.queue.keys.clone()
            if self.training:
                self.queue.push(keys)
        loss, entropy, positive_prob = per_sample_infonce_with_stats(q0, q1, k0, k1, negatives, self.temperature)
        return MethodOutput(loss, view_agreement(q0, q1), entropy, positive_prob,
                            sample_embedding(q0, q1))

    @torch.no_grad()
    def on_step_end(self) -> None:
        update_momentum(self.backbone, self.backbone_momentum, self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, self.momentum)
