"""``infobatch`` (Qin et al., ICLR 2024): samples scoring below a threshold (the mean) are dropped with
probability r; the kept ones among them get loss weight 1 / (1 - r), so the expected gradient is unchanged.

InfoBatch's r is a drop probability, not a pruning rate. With ``infobatch_r`` set, the published rule runs
as is and the achieved rate is whatever it gives. With it unset (matched budget), r is chosen each epoch
so that the expected skipped fraction equals the epoch's rate: ``r = rate / fraction below the mean``.
Only below-mean samples can be dropped, so when that fraction is too small (``r`` would exceed
``MAX_MATCHED_R``) the threshold rises from the mean to the score quantile ``rate / MAX_MATCHED_R``,
and r stays at ``MAX_MATCHED_R``. Both the threshold quantile and r are logged.
``infobatch_rescale=false`` keeps every weight at 1 (an ablation: is the 1 / (1 - r) rescaling what hurts
at high rates?). The full-data annealing epochs at the end are the pruning schedule's ``anneal`` option.
"""

import torch

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector

MAX_MATCHED_R = 0.9  # kept low scorers then weigh 10x; beyond that the loss variance explodes


class InfoBatchSelector(Selector):
    def select(self, table, rate, generator):
        scores = table.scores
        finite = scores.isfinite()
        mean = scores[finite].mean() if bool(finite.any()) else torch.tensor(0.0)
        candidates = finite & (scores < mean)
        fraction_below = candidates.float().mean().item()
        if self.cfg.infobatch_r is not None:
            r = self.cfg.infobatch_r
        elif fraction_below > 0 and rate / fraction_below <= MAX_MATCHED_R:
            r = rate / fraction_below
        else:
            r = MAX_MATCHED_R
            quantile = min(1.0, rate / MAX_MATCHED_R)
            order = torch.where(finite, scores, torch.full_like(scores, float("inf"))).argsort()
            candidates = torch.zeros_like(finite)
            candidates[order[: int(round(quantile * table.num_samples))]] = True
            candidates &= finite
            fraction_below = candidates.float().mean().item()
        dropped = candidates & (torch.rand(table.num_samples, generator=generator) < r)
        kept = (~dropped).nonzero().squeeze(1)
        weights = torch.ones(kept.numel())
        if r < 1.0 and self.cfg.infobatch_rescale:
            weights[candidates[kept]] = 1.0 / (1.0 - r)
        return EpochPlan(kept, weights, {"infobatch_r": r, "infobatch_candidate_fraction": fraction_below})
