"""Benchmark v4's protocol, written before its test seeds ran: tune on one family of data, report on others.

**Stages**, each deciding by a rule written here:

1. ``floor``: the probe on untrained backbones (5 init seeds) for every regime: what a run must clear.
2. ``tune`` (validation split, seeds 2000-2002, rate 0.9): on the Fashion-MNIST family (``regimes.TUNE``),
   ``random`` and every ``CANDIDATES`` setting of ``coverage`` (density form, balance, floor, junk guard, refresh).
   The rule: drop a candidate whose mean paired gain over ``random`` is below ``-NO_LOSS`` in any tuned regime;
   of the rest, take the highest mean over the regimes of its mean gain. If every candidate is dropped, the best
   mean is still carried to the report, so that transfer is measured, and the report says it was dropped.
3. ``report`` (test split, seeds 0-9, round-robin so an interrupted sitting leaves every row with comparable n),
   in every cell of ``CELLS`` (a regime and a rate; never-tuned digits regimes at 0.7 and 0.9, v3's regimes at
   0.9): ``random``, the ``oracle``, ``full_equal_compute``, ``coverage[v4]`` (the tuned setting),
   ``coverage[v3]`` (v3's recommendation, power 3), and ``full`` on seeds 0-2 as context.

**Compute.** Every pruned run gets the same one full-data warm-up epoch and no anneal. Epochs are set so the
warm-up is at most 25% of a pruned run's compute (``check_warmup_share``). An embedding refresh is a no-grad
forward of one clean image per sample, against a training sample-forward's two views, each forward and backward
(about three forwards): it is charged as ``EMBED_COST`` = 1/6 of a sample-forward, by FLOPs, so a run with
embeddings stops ``refreshes * N / 6`` sample-forwards early (``train.max_forwards``). The wall-clock ratio is
measured from the records and reported beside it. ``full_equal_compute`` is all the data stopped after exactly a
pruned run's planned sample-forwards.

**What counts** (``report.recommend``): Holm's adjustment runs over every selector comparison in the table (each
coverage setting against ``random`` and against ``full_equal_compute`` in every cell). A cell judges a selector
where the **oracle gate** passes: the oracle beats ``random`` by at least ``GATE`` with its paired 95% interval
above 0. A selector is recommended only if, in every gated cell, its Holm-adjusted difference is significantly
above 0 against ``random`` and against ``full_equal_compute``, and in every cell it shows no significant loss
against ``random``. Otherwise the recommendation is ``random``.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional

from pruning_quality.regimes import ALL_REGIMES, TRANSFER, TUNE, metric
from pruning_quality.runs import ORACLE, floor_key
from ssl_emp.pruning import Pruner

REPORT_SEEDS, FLOOR_SEEDS, FULL_SEEDS = 10, 5, 3
TUNE_SEEDS = (2000, 2001, 2002)
TUNE_RATE = 0.9
GATE = 0.01  # the oracle's least gain over random for a cell to judge a selector
NO_LOSS = 0.005  # a tuned candidate may lose at most this much (mean, validation) in any tuned regime
EMBED_COST = 1 / 6  # a clean no-grad forward of one image, in training sample-forwards (two views, fwd + bwd)
MAX_WARMUP_SHARE = 0.25
EPOCHS = {**{name: 60 for name in TUNE}, **{name: 200 for name in TRANSFER}}
CELLS = [
    *((name, rate) for name in TRANSFER for rate in (0.7, 0.9)),
    *((name, 0.9) for name in ("longtail", "dups90", "junk90-noise")),
]

_CLUSTER = ["pruning.selector=coverage", "pruning.coverage_density=cluster"]
CANDIDATES = {
    "cov[b0,g,f.25]": [*_CLUSTER, "pruning.coverage_balance=0", "pruning.coverage_guard=true", "pruning.floor=0.25"],
    "cov[b.5,g,f.25]": [*_CLUSTER, "pruning.coverage_balance=0.5", "pruning.coverage_guard=true", "pruning.floor=0.25"],
    "cov[b0,g,f0]": [*_CLUSTER, "pruning.coverage_balance=0", "pruning.coverage_guard=true", "pruning.floor=0"],
    "cov[b0,f.25]": [*_CLUSTER, "pruning.coverage_balance=0", "pruning.coverage_guard=false", "pruning.floor=0.25"],
    "cov[b0,g,f.5]": [*_CLUSTER, "pruning.coverage_balance=0", "pruning.coverage_guard=true", "pruning.floor=0.5"],
    "cov[b0,g,f.25,every10]": [
        *_CLUSTER,
        "pruning.coverage_balance=0",
        "pruning.coverage_guard=true",
        "pruning.floor=0.25",
        "pruning.embed_every=10",
    ],
    "cov[v3,g,f.25]": [
        "pruning.selector=coverage",
        "pruning.coverage_density=threshold",
        "pruning.coverage_power=3",
        "pruning.coverage_guard=true",
        "pruning.floor=0.25",
    ],
}
V3 = [
    "pruning.selector=coverage",
    "pruning.coverage_density=threshold",
    "pruning.coverage_power=3",
    "pruning.coverage_guard=false",
    "pruning.floor=0",
]
RANDOM = ["pruning.selector=random"]
SELECTORS = ("coverage[v4]", "coverage[v3]")  # what the report judges


def planned_forwards(num_samples: int, epochs: int, rate: float) -> int:
    return Pruner(num_samples, epochs, rate=rate, selector="random", warmup_epochs=1, anneal=0.0).planned_forwards()


def refreshes(overrides: list[str], epochs: int) -> int:
    """How many embedding refreshes a run with these overrides makes (0 for selectors without embeddings)."""
    if "pruning.selector=coverage" not in overrides and "pruning.selector=central" not in overrides:
        return 0
    every = next((int(o.split("=")[1]) for o in overrides if o.startswith("pruning.embed_every=")), 0)
    pruner = Pruner(100, epochs, rate=0.5, selector="random", warmup_epochs=1, anneal=0.0)
    count, last = 0, None
    for epoch in range(epochs):  # as Pruner.needs_embeddings: the first pruned epoch, then every ``every``
        if pruner.is_pruned_epoch(epoch) and (last is None or (every > 0 and epoch - last >= every)):
            count, last = count + 1, epoch
    return count


def charged(overrides: list[str], num_samples: int, epochs: int, rate: float) -> list[str]:
    """A pruned run's overrides, with its embedding refreshes charged against its sample-forwards."""
    cost = math.ceil(refreshes(overrides, epochs) * num_samples * EMBED_COST)
    run = [*overrides, f"pruning.rate={rate}"]
    return [*run, f"train.max_forwards={planned_forwards(num_samples, epochs, rate) - cost}"] if cost else run


def equal_compute(num_samples: int, epochs: int, rate: float) -> list[str]:
    """All the data, stopped after exactly the sample-forwards a run pruned at ``rate`` plans."""
    return ["pruning.selector=full", f"train.max_forwards={planned_forwards(num_samples, epochs, rate)}"]


def check_warmup_share(cells=None) -> None:
    """Refuse a cell whose one warm-up epoch is more than MAX_WARMUP_SHARE of a pruned run's compute."""
    for regime, rate in cells or [*CELLS, *((name, TUNE_RATE) for name in TUNE)]:
        share = 1 / ((1 - rate) * EPOCHS[regime])
        if share > MAX_WARMUP_SHARE:
            raise SystemExit(f"{regime} at rate {rate}: the warm-up is {share:.0%} of a pruned run's compute")


def check_batches_fit(data_for) -> None:
    """Refuse before any run where a regime's batch does not fit what its pruned epochs keep."""
    from pruning_quality.regimes import DATA_ROOT, ROOT
    from ssl_emp.config import load_pretrain_config

    for regime, rate in [*CELLS, *((name, TUNE_RATE) for name in TUNE)]:
        spec = ALL_REGIMES[regime]
        cfg = load_pretrain_config(ROOT / spec.recipe, [*spec.overrides, f"data.root={DATA_ROOT}"])
        pruner = Pruner(
            len(data_for(regime).pool), EPOCHS[regime], rate=rate, selector="random", warmup_epochs=1, anneal=0.0
        )
        try:
            pruner.check_batch_size(cfg.train.batch_size)
        except ValueError as exc:
            raise SystemExit(f"regime {regime} at rate {rate}: {exc}") from None


def _key(regime, stage, method, rate, seed) -> dict:
    return {
        "regime": regime,
        "stage": stage,
        "method": method,
        "requested_rate": rate,
        "seed": seed,
        "epochs": EPOCHS[regime],
    }


def _matching(records, **match):
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def tuned(records: list[dict]) -> Optional[dict]:
    """The tune rule (module docstring); None until every candidate and ``random`` ran on every tuned regime."""
    scored = []
    for name in CANDIDATES:
        gains = {}
        for regime in TUNE:
            runs = _matching(records, regime=regime, stage="tune", method=name)
            refs = {
                r["seed"]: metric(r, "validation")
                for r in _matching(records, regime=regime, stage="tune", method="random")
            }
            if len(runs) < len(TUNE_SEEDS) or len(refs) < len(TUNE_SEEDS):
                return None
            gains[regime] = statistics.mean(metric(r, "validation") - refs[r["seed"]] for r in runs)
        scored.append(
            {
                "method": name,
                "mean_gain": statistics.mean(gains.values()),
                "gains": gains,
                "dropped": min(gains.values()) < -NO_LOSS,
            }
        )
    kept = [s for s in scored if not s["dropped"]] or scored
    best = max(kept, key=lambda s: s["mean_gain"])
    return {
        **best,
        "overrides": CANDIDATES[best["method"]],
        "all_dropped": all(s["dropped"] for s in scored),
        "candidates": scored,
    }


def planned_runs(records: list[dict], data_for) -> list[tuple[dict, list[str]]]:
    """(key, overrides) in the order of work; the report appears once the tune rule has decided."""
    regimes = [*TUNE, *TRANSFER]
    todo = [(floor_key(regime, seed), []) for regime in regimes for seed in range(FLOOR_SEEDS)]
    for seed in TUNE_SEEDS:
        for regime in TUNE:
            n, e = len(data_for(regime).pool), EPOCHS[regime]
            for name, overrides in {"random": RANDOM, **CANDIDATES}.items():
                todo.append((_key(regime, "tune", name, TUNE_RATE, seed), charged(overrides, n, e, TUNE_RATE)))
    choice = tuned(records)
    if choice is None:
        return todo
    methods = {"random": RANDOM, "oracle": ORACLE, "coverage[v4]": choice["overrides"], "coverage[v3]": V3}
    for seed in range(REPORT_SEEDS):
        for regime, rate in CELLS:
            n, e = len(data_for(regime).pool), EPOCHS[regime]
            if seed < FULL_SEEDS:  # context, not a comparison: its compute is 1 / (1 - rate) times the others'
                todo.append((_key(regime, "report", "full", 0.0, seed), ["pruning.selector=full"]))
            todo.append((_key(regime, "report", "full_equal_compute", rate, seed), equal_compute(n, e, rate)))
            for name, overrides in methods.items():
                todo.append((_key(regime, "report", name, rate, seed), charged(overrides, n, e, rate)))
    return todo
