"""``random``: a uniform sample of the budget, drawn afresh every epoch."""

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget


class RandomSelector(Selector):
    uses_scores = False

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        return EpochPlan(torch.randperm(table.num_samples, generator=generator)[:keep])
