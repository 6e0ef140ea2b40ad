"""``topk``: keep the (1 - rate) N highest scores."""

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget, top_by_score


class TopKSelector(Selector):
    def select(self, table, rate, generator):
        return EpochPlan(top_by_score(table.scores, budget(table.num_samples, rate), generator))
