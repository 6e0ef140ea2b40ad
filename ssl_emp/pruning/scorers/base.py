from __future__ import annotations

import torch

from ssl_emp.methods.base import MethodOutput
from ssl_emp.pruning.table import ScoreTable


class Scorer:
    """Turns one forward pass's per-sample outputs (and the table) into scores [B]; higher = more worth training."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, output: MethodOutput, table: ScoreTable, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
