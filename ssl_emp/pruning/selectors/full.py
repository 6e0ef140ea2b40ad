"""``full``: every sample, every epoch (no pruning)."""

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector


class FullSelector(Selector):
    uses_scores = False

    def select(self, table, rate, generator):
        return EpochPlan(torch.arange(table.num_samples))
