"""``infobatch`` (Qin et al., ICLR 2024): samples scoring below a threshold (the mean) are dropped with
probability r; the kept ones among them get loss weight 1 / (1 - r), so the expected gradient is unchanged.

InfoBatch's r is a drop probability, not a pruning rate. Two modes:

- **published rule** (``infobatch_r`` set): each below-mean sample is dropped by a coin flip with
  probability r, as in the paper; the run skips whatever that comes to, and reports it.
- **matched budget** (``infobatch_r`` unset): the epoch drops exactly ``N - budget`` samples, drawn
  uniformly from the below-mean ones, so every method is compared at the same cost; r is then the
  fraction of candidates dropped. Only candidates can be dropped, so when the below-mean ones are too few
  for ``r <= MAX_MATCHED_R`` the threshold rises to the lowest ``drop / MAX_MATCHED_R`` scores (and, when
  even all samples are too few, every sample is a candidate and r exceeds it). r and the candidate
  fraction are logged.

``infobatch_rescale=false`` keeps every weight at 1 (an ablation: is the 1 / (1 - r) rescaling what hurts
at high rates?). The full-data annealing epochs at the end are the pruning schedule's ``anneal`` option.
"""

import math

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget

MAX_MATCHED_R = 0.9  # kept low scorers then weigh 10x; beyond that the loss variance explodes


def below_mean(scores: torch.Tensor) -> torch.Tensor:
    finite = scores.isfinite()
    mean = scores[finite].mean() if bool(finite.any()) else torch.tensor(0.0)
    return finite & (scores < mean)


class InfoBatchSelector(Selector):
    reads = ("infobatch_r", "infobatch_rescale")

    def select(self, table, rate, generator):
        scores = table.scores
        n = table.num_samples
        candidates = below_mean(scores)
        if self.cfg.infobatch_r is not None:
            r = self.cfg.infobatch_r
            dropped = candidates & (torch.rand(n, generator=generator) < r)
        else:
            drop = n - budget(n, rate)
            if drop > MAX_MATCHED_R * int(candidates.sum()):
                # The lowest scores first; unseen samples (+inf) last, so they are the last to be candidates.
                order = scores.argsort(stable=True)
                candidates = torch.zeros(n, dtype=torch.bool)
                candidates[order[: min(n, math.ceil(drop / MAX_MATCHED_R))]] = True
            pool = candidates.nonzero().squeeze(1)
            dropped = torch.zeros(n, dtype=torch.bool)
            dropped[pool[torch.randperm(pool.numel(), generator=generator)[:drop]]] = True
            r = drop / max(pool.numel(), 1)
        kept = (~dropped).nonzero().squeeze(1)
        weights = torch.ones(kept.numel())
        if r < 1.0 and self.cfg.infobatch_rescale:
            weights[candidates[kept]] = 1.0 / (1.0 - r)
        return EpochPlan(
            kept, weights, {"infobatch_r": r, "infobatch_candidate_fraction": float(candidates.float().mean())}
        )
