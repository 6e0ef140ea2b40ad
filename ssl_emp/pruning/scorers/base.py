from __future__ import annotations

from typing import Optional

import torch

from ssl_emp.pruning.sample_stats import SampleStats
from ssl_emp.pruning.table import ScoreTable


class Scorer:
    """Turns one forward pass's per-sample outputs into scores [B]; higher = more worth training.

    ``__call__`` runs inside every training step, before the table records the visit (so it sees each
    sample's previous visit), and must stay on the device. ``selection_scores`` runs once per epoch, on the
    CPU copy the selector reads: a scorer whose score depends on time (UCB's bonus, EMP's memory) refreshes
    it there, for every sample; ``keep`` is the fraction the epoch keeps (None where that is a matter of
    chance, under InfoBatch's published rule).
    """

    reads: tuple[str, ...] = ()  # the pruning settings this scorer reads (the config refuses the others)

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, stats: SampleStats, table: ScoreTable, indices: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def selection_scores(self, table: ScoreTable, epoch: int, keep: Optional[float] = None) -> torch.Tensor:
        return table.scores

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
