"""``eps_greedy``: a fraction eps of the kept budget is drawn uniformly from the rest, the others by top score."""

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget, top_by_score


class EpsGreedySelector(Selector):
    reads = ("eps",)

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        explore = int(round(self.cfg.eps * keep))
        greedy = top_by_score(table.scores, keep - explore, generator)
        rest = torch.ones(table.num_samples, dtype=torch.bool)
        rest[greedy] = False
        rest_idx = rest.nonzero().squeeze(1)
        explored = rest_idx[torch.randperm(rest_idx.numel(), generator=generator)[:explore]]
        return EpochPlan(torch.cat([greedy, explored]))
