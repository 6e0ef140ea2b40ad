"""``rs2``: repeated sampling without replacement *across* epochs (RS2, Okanovic et al., ICLR 2024).

Every sample is trained on once before any is trained on twice: each pruned epoch keeps the budget from
the least visited samples, ties broken at random. Unlike ``random`` (a fresh uniform subset each epoch,
which lets some samples wait many epochs), visits stay as even as they can be.
"""

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget


class RS2Selector(Selector):
    uses_scores = False

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        shuffle = torch.randperm(table.num_samples, generator=generator)
        fewest_first = table.visits[shuffle].argsort(stable=True)
        return EpochPlan(shuffle[fewest_first[:keep]])
