"""Selectors that give every sample a target rate and draw each epoch's budget to follow it, by credit.

A subclass says how much each sample is worth keeping (:meth:`TargetRateSelector.weights`, relative); the base
turns that into rates summing to the epoch's budget (capped at one visit per epoch) and draws the budget so that
each sample's visits track its rate without long waits: every sample earns its rate as credit each pruned epoch
and the budget goes to the most credit (:func:`~ssl_emp.pruning.embeddings.draw_by_credit`). With equal weights
that is RS2, every sample once before any twice; ``random`` has the same expectation with more spread.
"""

from __future__ import annotations

from typing import Optional

import torch

from ssl_emp.pruning.embeddings import draw_by_credit, target_rates
from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget


class TargetRateSelector(Selector):
    uses_scores = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.credit: Optional[torch.Tensor] = None  # [N] float64: rates earned minus visits paid

    def weights(self, table) -> tuple[torch.Tensor, dict]:
        """Each sample's relative worth (>= 0; 0: drawn only when the budget exceeds the rest) and numbers to log."""
        raise NotImplementedError

    def rates(self, weights: torch.Tensor, keep: int, info: dict) -> torch.Tensor:
        """Each sample's target rate from its weight, summing to ``keep`` (a subclass may cap or floor them, and
        add what it did to ``info``)."""
        return target_rates(weights, keep)

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        if self.credit is None:
            # A random start in [-1, 0) each, as systematic sampling's random offset: with equal starts, every
            # sample of tiny rate would come up once early (the others having just paid), and a burst of m copies
            # would take m visits before settling to its share.
            self.credit = torch.rand(table.num_samples, generator=generator, dtype=torch.float64) - 1.0
        weights, info = self.weights(table)
        rates = self.rates(weights, keep, info)
        chosen = draw_by_credit(rates, self.credit, keep, generator)
        return EpochPlan(chosen, info={**info, **concentration(rates, keep)})

    def state_dict(self) -> dict:
        return {} if self.credit is None else {"credit": self.credit}

    def load_state_dict(self, state: dict) -> None:
        self.credit = state.get("credit")


def concentration(rates: torch.Tensor, keep: int) -> dict:
    """How unevenly the rates spread an epoch's budget: the share the most-weighted 10% of samples get (0.1 is
    ``random``'s, higher is more skewed) and the effective sample size 1 / sum(p^2) of the draw's distribution
    p = rates / keep, as a share of N (1 is ``random``'s; 0.1 means the budget behaves like a fixed tenth)."""
    top = rates.sort(descending=True).values[: max(1, rates.numel() // 10)].sum() / max(keep, 1)
    p = rates / max(float(rates.sum()), 1e-12)
    return {"target_top10_share": float(top), "effective_sample_share": float(1.0 / (p.square().sum() * rates.numel()))}
