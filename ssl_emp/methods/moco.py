"""MoCo v2 (Chen et al., 2020): a momentum key encoder, a queue of negatives, symmetric InfoNCE.

lightly provides the projection head and the momentum update. The queue is the project's own device-side
ring buffer (``queue.KeyQueue``: lightly's ``MemoryBankModule`` syncs with the host every step), and the
loss is written out per sample (``losses.per_sample_infonce_with_stats``) because pruning needs one loss per
sample, which lightly's ``NTXentLoss`` averages away.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from lightly.models.modules.heads import MoCoProjectionHead
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.methods.losses import chance_loss, per_sample_infonce_with_stats, sample_embedding, view_agreement
from ssl_emp.methods.queue import KeyQueue
from ssl_emp.methods.teacher import MomentumTeacherMethod, frozen_copy
from ssl_emp.pruning import SampleStats


class MoCo(MomentumTeacherMethod):
    """``MoCo(backbone, feature_dim)``: the query encoder is ``backbone`` plus lightly's projection head to
    ``proj_dim``; the key encoder is its exponential moving average, the momentum teacher of
    :class:`~ssl_emp.methods.teacher.MomentumTeacherMethod` at a constant weight ``momentum``; ``queue_size``
    negative keys are kept. ``shuffle_bn`` (DDP): keys are encoded on a random draw of the global batch."""

    # A constant schedule has no position to save: MoCo's state stays what it was (old checkpoints load).
    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.5,
        momentum: float = 0.99,
        queue_size: int = 4096,
        shuffle_bn: bool = True,
    ):
        super().__init__(momentum, momentum)  # constant: from momentum to momentum
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(feature_dim, proj_hidden_dim, proj_dim)
        self.backbone_momentum = frozen_copy(backbone)
        self.projection_head_momentum = frozen_copy(self.projection_head)
        self.queue = KeyQueue(queue_size, proj_dim)
        self.temperature = temperature
        self.shuffle_bn = shuffle_bn

    def forward(self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard] = None) -> SampleStats:
        q0, q1 = self.projection_head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        with torch.no_grad():
            # [n, 2, d]: both views' keys of this rank's samples, and of the global batch's (every rank's)
            keys, everyone = self._keys(view0, view1, shard)
            k0, k1 = keys.unbind(dim=1)
            # Negatives are the queue as it was before this batch; then this batch's keys are enqueued: under
            # DDP every rank's keys, in global batch order, so the queue stays identical on all ranks.
            negatives = self.queue.keys.clone()
            if self.training:
                self.queue.push(rearrange(everyone, "batch views dim -> (views batch) dim"))
        loss, entropy, positive_prob = per_sample_infonce_with_stats(q0, q1, k0, k1, negatives, self.temperature)
        return SampleStats(
            loss,
            view_agreement(q0, q1),
            entropy,
            positive_prob,
            sample_embedding(q0, q1),
            chance_loss(loss, 1 + negatives.shape[0]),
        )

    def _key_encoder(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(images)).float()

    def _keys(
        self, view0: torch.Tensor, view1: torch.Tensor, shard: Optional[Shard]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The key encoder's embeddings of both views, [n, 2, d], both views in one BatchNorm batch: this rank's
        samples', and the global batch's (one all-gather under DDP, which the queue needs anyway).

        Under DDP with ``shuffle_bn``, each rank encodes a random draw of the global batch's samples instead of
        its own (MoCo's shuffled BN): otherwise a sample's query and key share one rank's BN statistics, and
        the batch can signal through them which key is the positive, a shortcut that lowers the loss without
        learning features. On one process the BN batch is the whole batch whatever its order, so there is
        nothing to shuffle.
        """

        def encode(v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
            return rearrange(self._key_encoder(torch.cat([v0, v1])), "(views batch) dim -> batch views dim", views=2)

        if shard is None:
            keys = encode(view0, view1)
            return keys, keys
        if not self.shuffle_bn:
            keys = encode(view0, view1)
            return keys, shard.gather_detached(keys)
        drawn, permutation = shard.shuffle(torch.stack([view0, view1], dim=1))  # [n, 2, C, H, W]
        everyone = shard.unshuffle(encode(drawn[:, 0], drawn[:, 1]), permutation)
        return everyone[shard.local], everyone
