"""DINO (Caron et al., 2021): a student matches a momentum teacher's centred, sharpened softmax over K outputs.

lightly provides the projection head, the loss's center (``DINOLoss.update_center``, which averages across
ranks under DDP) and the momentum update (through :class:`~ssl_emp.methods.teacher.MomentumTeacherMethod`).
The cross-entropy is written out per sample (``losses.per_sample_dino_with_entropy``) because pruning needs
one loss per sample, which ``DINOLoss`` averages away. Multi-crop: the trainer passes ``local_views`` (the
config's ``augment.local_crops``), which only the student sees.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import nn

from ssl_emp.distributed import Shard
from ssl_emp.methods.losses import chance_loss, per_sample_dino_with_entropy, sample_embedding, view_agreement
from ssl_emp.methods.teacher import MomentumTeacherMethod, frozen_copy
from ssl_emp.pruning import SampleStats


class DINO(MomentumTeacherMethod):
    """``DINO(backbone, feature_dim)``: student and teacher are ``backbone`` plus lightly's DINO head (hidden
    ``proj_hidden_dim``, normalised bottleneck ``bottleneck_dim``, ``proj_dim`` outputs: the K of the softmax).
    The teacher is the student's moving average, its weight rising on a cosine from ``momentum`` to
    ``momentum_end``; its outputs are centred (EMA weight ``center_momentum``) and sharpened by
    ``teacher_temp``, which rises linearly from ``warmup_teacher_temp`` over the first ``teacher_temp_warmup``
    of the run (a fraction; :meth:`set_progress` says where the run stands). The head's last layer is not updated
    over the first ``freeze_last_layer`` of the run (a fraction; DINO's ViT recipe: one epoch)."""

    # Every rank updates the center with the same all-reduced batch center: DDP need not broadcast it.
    ddp_identical_buffers = ("criterion.center",)

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        proj_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        proj_dim: int = 65536,
        head_batchnorm: bool = False,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup: float = 0.0,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        freeze_last_layer: float = 0.0,
    ):
        super().__init__(momentum, momentum_end)
        self.backbone = backbone
        head = dict(
            input_dim=feature_dim,
            hidden_dim=proj_hidden_dim,
            bottleneck_dim=bottleneck_dim,
            output_dim=proj_dim,
            batch_norm=head_batchnorm,
        )
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm: nothing to act on here
            warnings.simplefilter("ignore", FutureWarning)
            self.projection_head = DINOProjectionHead(**head)
            # Its weight-normalised last layer cannot be deep-copied: the teacher's is built, then loaded.
            self.projection_head_momentum = DINOProjectionHead(**head)
        self.backbone_momentum = frozen_copy(backbone)
        self.projection_head_momentum.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.projection_head_momentum)
        # lightly's loss holds the center and updates it (all-reduced across ranks); its temperatures are ours.
        self.criterion = DINOLoss(
            proj_dim, teacher_temp=teacher_temp, student_temp=student_temp, center_momentum=center_momentum
        )
        self.warmup_teacher_temp, self.teacher_temp_warmup = warmup_teacher_temp, teacher_temp_warmup
        self.freeze_last_layer = freeze_last_layer

    def before_optimizer_step(self) -> None:
        """Drop the last layer's gradients while it is frozen, so the optimizer leaves it as it is (weight decay
        included). lightly's ``cancel_last_layer_gradients`` counts whole epochs; this follows the run's progress,
        as the teacher's schedules do, because a pruned run's epochs are not its compute."""
        if self.progress < self.freeze_last_layer:
            for parameter in self.projection_head.last_layer.parameters():
                parameter.grad = None

    def current_teacher_temp(self) -> float:
        """Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up's fraction of the run: by
        progress, where lightly's schedule is indexed by whole epochs (a pruned run's epochs are not its
        compute)."""
        end = self.criterion.teacher_temp
        if self.progress >= self.teacher_temp_warmup:
            return end
        return self.warmup_teacher_temp + (end - self.warmup_teacher_temp) * self.progress / self.teacher_temp_warmup

    def _head(self, head: DINOProjectionHead, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs, bottleneck)``: lightly's ``DINOProjectionHead.forward`` split in two, to keep the normalised
        bottleneck, the sample's embedding for the pruner ([B, bottleneck_dim] rather than [B, K])."""
        bottleneck = F.normalize(head.layers(features), dim=-1, p=2)
        return head.last_layer(bottleneck), bottleneck

    def forward(
        self,
        view0: torch.Tensor,
        view1: torch.Tensor,
        shard: Optional[Shard] = None,
        local_views: Sequence[torch.Tensor] = (),
    ) -> SampleStats:
        batch = view0.shape[0]
        out, bottleneck = self._head(self.projection_head, self.backbone(torch.cat([view0, view1])))
        student = list(out.chunk(2))
        if local_views:  # one pass for all local crops (they share a size)
            student += list(self.projection_head(self.backbone(torch.cat(list(local_views)))).split(batch))
        with torch.no_grad():
            teacher = list(self.projection_head_momentum(self.backbone_momentum(torch.cat([view0, view1]))).chunk(2))
        loss, entropy = per_sample_dino_with_entropy(
            teacher, student, self.criterion.center, self.current_teacher_temp(), self.criterion.student_temp
        )
        if self.training:  # once per step, after the loss has read the center (as in DINOLoss.forward)
            self.criterion.update_center(torch.stack(teacher).float())
        b0, b1 = bottleneck.chunk(2)
        return SampleStats(
            loss,
            view_agreement(b0, b1),
            entropy,
            embedding=sample_embedding(b0, b1),
            chance_loss=chance_loss(loss, self.criterion.center.shape[-1]),
        )
