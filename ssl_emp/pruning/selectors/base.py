from __future__ import annotations

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.table import ScoreTable


class Selector:
    """Builds a pruned epoch's plan from the score table (a CPU copy), skipping about ``rate`` of the samples."""

    reads: tuple[str, ...] = ()  # the pruning settings this selector reads besides rate and the schedule
    uses_scores = True  # False: the scorer (and its settings) cannot change which samples are kept
    # True: it reads ``self.memory``, an EmbeddingMemory of clean images that the training loop fills when
    # ``Pruner.needs_embeddings`` asks (the pruner attaches it)
    needs_embeddings = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.memory = None

    def select(self, table: ScoreTable, rate: float, generator: torch.Generator) -> EpochPlan:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What a resumed run needs to select as the first one would (e.g. each sample's credit)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def budget(num_samples: int, rate: float) -> int:
    """How many samples a pruned epoch keeps: at least one."""
    return max(1, num_samples - int(round(rate * num_samples)))


def top_by_score(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the k highest scores; ties (unseen samples) are broken at random, not by index."""
    shuffle = torch.randperm(scores.numel(), generator=generator)
    return shuffle[scores[shuffle].topk(k).indices]
