"""The pruning engine as the training loop sees it: a plan per epoch, an observation per step.

**Pruning rate means one thing**: the fraction of sample-forwards skipped over the whole run. Full-data
epochs (the first ``warmup_epochs``, the last ``anneal`` fraction) skip nothing, so the pruned epochs
skip ``rate * epochs / pruned_epochs`` each, and the run as a whole skips ``rate``.
"""

from __future__ import annotations

import math

import torch

from ssl_emp.methods.base import MethodOutput
from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.scorers import SCORERS
from ssl_emp.pruning.selectors import SELECTORS
from ssl_emp.pruning.stats import gini, score_quantiles, visit_histogram
from ssl_emp.pruning.table import ScoreTable


class Pruner:
    def __init__(self, cfg, num_samples: int, epochs: int, seed: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.num_samples = num_samples
        self.epochs = epochs
        self.seed = seed
        self.table = ScoreTable(num_samples, cfg.history, device)
        self.scorer = SCORERS[cfg.scorer](cfg)
        self.selector = SELECTORS[cfg.selector](cfg)
        self.first_annealed_epoch = epochs - int(math.floor(cfg.anneal * epochs))
        self.pruned_epochs = max(0, self.first_annealed_epoch - min(cfg.warmup_epochs, epochs))
        self.epoch_rate = self._epoch_rate()

    @property
    def active(self) -> bool:
        return self.cfg.selector != "full" and self.cfg.rate > 0

    def _epoch_rate(self) -> float:
        if not self.active:
            return 0.0
        if self.pruned_epochs == 0:
            raise ValueError(f"pruning.rate={self.cfg.rate} but no epoch is left to prune: {self.epochs} epochs, "
                             f"{self.cfg.warmup_epochs} warm-up, anneal {self.cfg.anneal}.")
        rate = self.cfg.rate * self.epochs / self.pruned_epochs
        if rate >= 1.0:
            raise ValueError(
                f"pruning.rate={self.cfg.rate} over {self.epochs} epochs cannot be reached when only "
                f"{self.pruned_epochs} of them are pruned (each would have to skip {rate:.2f} of the data). "
                "Lower pruning.warmup_epochs or pruning.anneal, or add epochs.")
        return rate

    def is_pruned_epoch(self, epoch: int) -> bool:
        return self.active and self.cfg.warmup_epochs <= epoch < self.first_annealed_epoch

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan, shuffled; a function of (seed, epoch, table) only, so a resumed run rebuilds it."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.is_pruned_epoch(epoch):
            plan = self.selector.select(self.table.to_cpu(), self.epoch_rate, generator)
        else:
            plan = EpochPlan(torch.arange(self.num_samples))
        return plan.shuffled(generator)

    def observe(self, indices: torch.Tensor, output: MethodOutput, epoch: int) -> None:
        """Record one step's per-sample outputs; everything stays on the device."""
        self.table.record(indices, output.per_sample_loss, epoch)
        self.table.set_scores(indices, self.scorer(output, self.table, indices))

    def epoch_metrics(self, plan: EpochPlan, epochs_done: int, sample_forwards: int) -> dict:
        """Rate requested vs achieved, visit evenness and score spread; one host sync per epoch."""
        full_forwards = epochs_done * self.num_samples
        visits = self.table.visits.cpu()
        metrics = {
            "pruning/requested_rate": self.cfg.rate,
            "pruning/achieved_rate": 1.0 - sample_forwards / full_forwards,
            "pruning/epoch_kept": len(plan),
            "pruning/epoch_kept_fraction": len(plan) / self.num_samples,
            "pruning/sample_forwards": sample_forwards,
            "pruning/full_data_forwards": full_forwards,
            "pruning/visits_gini": gini(visits),
            "pruning/visits_min": int(visits.min()),
            "pruning/visits_max": int(visits.max()),
            "pruning/never_seen": int((visits == 0).sum()),
            "pruning/visit_histogram": visit_histogram(visits),
        }
        metrics.update({f"pruning/{k}": v for k, v in plan.info.items()})
        metrics.update({f"pruning/score_{k}": v for k, v in score_quantiles(self.table.scores).items()})
        return metrics

    def state_dict(self) -> dict:
        return {"table": self.table.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.table.load_state_dict(state["table"])
