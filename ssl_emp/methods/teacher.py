"""A momentum teacher on a cosine schedule: the base of the self-distilling methods (BYOL, DINO) and of MoCo's key
encoder (a constant schedule).

The teacher is an exponential moving average of the student's modules (lightly's ``update_momentum``) whose
weight rises on a cosine from ``momentum`` to ``momentum_end`` (lightly's ``cosine_schedule``) over the run.
Where the run stands is set by :meth:`set_progress` and saved with the weights (the module's extra state), so a
method restored from a checkpoint continues the schedule where it was.
"""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_emp.methods.base import SelfSupervisedMethod


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that no gradient reaches: a teacher starts as the student."""
    teacher = copy.deepcopy(module)
    deactivate_requires_grad(teacher)
    return teacher


class MomentumTeacherMethod(SelfSupervisedMethod):
    """A student (``backbone`` and ``projection_head``, set by the subclass) trained against its moving average
    (``backbone_momentum`` and ``projection_head_momentum``: MoCo's names for its key encoder)."""

    backbone_momentum: nn.Module
    projection_head: nn.Module
    projection_head_momentum: nn.Module

    def __init__(self, momentum: float, momentum_end: float):
        super().__init__()
        self.momentum, self.momentum_end = momentum, momentum_end
        # A Python float, not a buffer: reading a device tensor at each step's update would be a host sync.
        self.progress = 0.0

    def set_progress(self, fraction: float) -> None:
        self.progress = min(max(float(fraction), 0.0), 1.0)

    def current_momentum(self) -> float:
        # lightly's cosine runs over steps 0 .. max_steps - 1: with max_steps 2, step is the fraction of the run.
        return cosine_schedule(self.progress, 2, self.momentum, self.momentum_end)

    @torch.no_grad()
    def on_step_end(self) -> None:
        momentum = self.current_momentum()
        update_momentum(self.backbone, self.backbone_momentum, momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, momentum)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.progress, dtype=torch.float64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.progress = float(state)
