"""Dynamic data pruning: score x selection (docs/design.md, "The pruning engine: score x selection").

Stands alone on torch: no other part of ssl_emp is imported, so it drops into any training loop::

    pruner = Pruner(len(dataset), epochs, rate=0.7, scorer="emp", selector="infobatch")
    loader = DataLoader(WithIndex(dataset), batch_sampler=pruner.batch_sampler(256))
    ...  loss = pruner.step(indices, per_sample_loss)   # in the loop, then loss.backward()
"""

from ssl_emp.pruning.plan import EpochPlan, near_equal_batches
from ssl_emp.pruning.pruner import PlanMismatchError, Pruner
from ssl_emp.pruning.sample_stats import SampleStats, prediction_entropy
from ssl_emp.pruning.sampler import PrunedBatchSampler, PrunedSampler, WithIndex
from ssl_emp.pruning.scorers import MEMORY_FORMS, SCORERS, supervised_emp_score
from ssl_emp.pruning.selectors import SELECTORS
from ssl_emp.pruning.settings import (
    RECOMMENDED,
    SCORE_SELECTOR,
    PruningSettings,
    check_settings,
    prunes,
    resolve_method,
)
from ssl_emp.pruning.stats import achieved_rate, gini
from ssl_emp.pruning.table import ScoreTable

__all__ = [
    "EpochPlan",
    "PlanMismatchError",
    "Pruner",
    "PrunedBatchSampler",
    "PrunedSampler",
    "PruningSettings",
    "RECOMMENDED",
    "SCORE_SELECTOR",
    "MEMORY_FORMS",
    "SCORERS",
    "SELECTORS",
    "SampleStats",
    "ScoreTable",
    "WithIndex",
    "achieved_rate",
    "check_settings",
    "gini",
    "near_equal_batches",
    "prediction_entropy",
    "prunes",
    "resolve_method",
    "supervised_emp_score",
]
