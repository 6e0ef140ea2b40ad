"""The pruning-quality benchmark (v4): can choosing samples pay, and does a selector tuned on one family of data
still pay on data it was never tuned on? SimCLR, paired seeds, equal compute, Holm-adjusted.

    .venv/bin/python benchmarks/pruning_quality --out benchmarks/results/v4                # resumes; sittings
    .venv/bin/python benchmarks/pruning_quality --out benchmarks/results/v4 --workers 2    # one per free core
    .venv/bin/python benchmarks/pruning_quality --out benchmarks/results/v4 --summarise-only

Run it from a clean ``git worktree`` pinned at one commit: every record carries its commit and the summary
refuses mixed ones. ``regimes`` builds the data, ``protocol`` holds the rules (written before the test seeds
ran), ``runs`` makes one run, ``workers`` shares sittings between processes, ``stats`` and ``report`` summarise.
The public names below are what other scripts (``benchmarks/gpu_science.py``) and the tests use.
"""

from pruning_quality.protocol import EMBED_COST, equal_compute
from pruning_quality.regimes import ALL_REGIMES, Regime, RegimeData, load_regime, metric, oracle_weights
from pruning_quality.runs import COMMON, FAIR, ORACLE, accuracy, current_commit, machine, rerun, with_oracle_file
from pruning_quality.stats import fieller, holm, min_detectable_effect, paired

__all__ = [
    "ALL_REGIMES",
    "COMMON",
    "EMBED_COST",
    "FAIR",
    "ORACLE",
    "Regime",
    "RegimeData",
    "accuracy",
    "current_commit",
    "equal_compute",
    "fieller",
    "holm",
    "load_regime",
    "machine",
    "metric",
    "min_detectable_effect",
    "oracle_weights",
    "paired",
    "rerun",
    "with_oracle_file",
]
