"""``stratified``: coverage over a score instead of an embedding (CCS, Zheng et al., ICLR 2023). The seen samples'
scores (any scorer's) are cut into ``strata`` bins of equal width, and the budget is spread evenly over the bins:
the smallest first, each taking at most an even share of what is left, so every bin short of its share gives
it all and the rest split the remainder to within one sample. Inside a bin the draw is uniform and fresh each
epoch. Unseen samples (no score yet) are kept first."""

from __future__ import annotations

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget


def even_shares(sizes: list[int], total: int) -> list[int]:
    """How many to take from each group: ``total`` spread as evenly as the sizes allow (smallest groups first,
    each taking all of itself or an even share of what is left)."""
    shares = [0] * len(sizes)
    left = min(total, sum(sizes))
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for position, group in enumerate(order):
        remaining_groups = len(sizes) - position
        shares[group] = min(sizes[group], -(-left // remaining_groups))  # ceil: the remainder goes first
        left -= shares[group]
    return shares


class StratifiedSelector(Selector):
    reads = ("strata",)

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        scores = table.scores
        unseen = (~torch.isfinite(scores)).nonzero().squeeze(1)
        unseen = unseen[torch.randperm(unseen.numel(), generator=generator)[:keep]]
        seen = torch.isfinite(scores).nonzero().squeeze(1)
        left = keep - unseen.numel()
        if left <= 0 or seen.numel() == 0:
            return EpochPlan(unseen)
        values = scores[seen].double()
        low, high = float(values.min()), float(values.max())
        strata = self.cfg.strata
        width = (high - low) / strata if high > low else 1.0
        bins = ((values - low) / width).floor().long().clamp(0, strata - 1)
        members = [seen[bins == b] for b in range(strata)]
        shares = even_shares([m.numel() for m in members], left)
        kept = [m[torch.randperm(m.numel(), generator=generator)[:share]] for m, share in zip(members, shares)]
        return EpochPlan(torch.cat([unseen, *kept]), info={"strata_filled": sum(s > 0 for s in shares)})
