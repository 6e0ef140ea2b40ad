"""Dynamic data pruning: score x selection (docs/design.md, "The pruning engine: score x selection").

Stands alone on torch: no other part of ssl_emp is imported, so it drops into any training loop::

    pruner = Pruner(len(dataset), epochs, rate=0.7, scorer="emp", selector="infobatch")
    loader = DataLoader(WithIndex(dataset), batch_sampler=pruner.batch_sampler(256))
    ...  loss = pruner.step(indices, per_sample_loss)   # in the loop, then loss.backward()
"""

from ssl_emp.pruning.scorers import SCORERS
from ssl_emp.pruning.selectors import SELECTORS
from ssl_emp.pruning.settings import (
    MEMORY_FORM_NAMES,
    RECOMMENDED,
    SCORE_SELECTOR,
    PruningSettings,
    check_settings,
    prunes,
    resolve_method,
)

# The rest imports torch, so it loads when first asked for: the settings and the registries' names above are
# what the config reads before torch loads.
_LAZY = {
    "EpochPlan": "plan",
    "near_equal_batches": "plan",
    "PlanMismatchError": "pruner",
    "Pruner": "pruner",
    "SampleStats": "sample_stats",
    "prediction_entropy": "sample_stats",
    "PrunedBatchSampler": "sampler",
    "PrunedSampler": "sampler",
    "WithIndex": "sampler",
    "MEMORY_FORMS": "scorers.emp",
    "supervised_emp_score": "scorers.emp",
    "achieved_rate": "stats",
    "gini": "stats",
    "ScoreTable": "table",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"ssl_emp.pruning.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssl_emp.pruning' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "MEMORY_FORM_NAMES",
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
