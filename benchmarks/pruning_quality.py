"""Does choosing samples beat what a user gets for free at the same compute? SimCLR on four regimes, paired seeds.

    .venv/bin/python benchmarks/pruning_quality.py                 # the whole benchmark (resumes; several sittings)
    .venv/bin/python benchmarks/pruning_quality.py --max-hours 1   # one sitting
    .venv/bin/python benchmarks/pruning_quality.py --workers 2     # one process per free core, sharing the plan
    .venv/bin/python benchmarks/pruning_quality.py --summarise-only

Run it from a clean checkout (a ``git worktree`` pinned at one commit): every record carries the commit it ran
at, and the summary refuses records of mixed commits. Each run is a real pretraining run, then a linear probe
trained on a labelled set and read on two held-out sets: a **validation** split carved from the training labels
(for every choice) and the **test** split (for what is reported).

Regimes (``REGIMES``): ``digits``; ``fashion-mnist`` (a 10,000-image subset at 16 px); ``longtail``
(Fashion-MNIST with class sizes falling exponentially from 6,000 to 60, an imbalance of 100, 14,886 images:
``ssl_emp.data.variants``; at 2,000 to 20 (4,958 images; the results of commit 94970ee) full data cleared the
floor by only 0.055-0.063 at 20-40 epochs, and an exploratory validation run at 6,000 and 12 epochs by 0.086;
probed on a balanced labelled set and the balanced test set, reporting balanced accuracy and the 3 rarest
classes); ``redundant`` (2,000 unique Fashion-MNIST images beside 100 bases with 39 near-duplicates each, shifted
by up to 2 px with pixel noise: 65% of the pool are copies; probed on the clean test set, reporting the
share of sample-forwards spent on copies).

Fair accounting: every method gets the same 1-epoch full-data warm-up and no full-data anneal, so the tables
compare selection alone; InfoBatch's published rule (r = 0.5) keeps its own anneal (delta = 0.875), and the EMP
default with that anneal is an ablation row. The learning rate follows the fraction of planned compute, and
``full_equal_compute`` (all the data, cut after exactly the pruned runs' sample-forwards by
``train.max_forwards``) traverses the same curve.

Order of work, each stage deciding by a rule written here before it ran:

1. **floors**: the probe on untrained backbones (5 init seeds).
2. **calibrate** (seeds 1000-1001, validation): for each regime, the first (cheapest) epoch count in ``epochs``
   for which full data clears the floor by >= 0.08 and beats ``random`` at the headline rate 0.9 by >= 0.03
   (means over the two seeds); if none does, the one with the most headroom, marked as missing the bar.
3. **select** (seeds 2000-2001, validation, headline rate): the EMP default is the candidate in ``EMP_CANDIDATES``
   with the highest mean paired gain over ``random`` across regimes among those whose memory term's mean
   Spearman correlation with the loss is at most 0.9 in absolute value; the best loss-only selector likewise
   among ``LOSS_CANDIDATES``.
4. **report** (seeds 0-9, test): at 0.9 ``full``, ``random``, ``rs2``, ``full_equal_compute``, the EMP default, the
   best loss-only selector, ``infobatch_published`` (with ``random`` and ``full_equal_compute`` run again at each
   seed's achieved rate and compute); at 0.7 (seeds 0-4) the same minus the published rule; the anneal ablation
   (the EMP default with the default anneal, at 0.7, where the anneal leaves epochs to prune; seeds 0-4). Seeds
   run round-robin, so an interrupted sitting leaves every row with comparable n.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random as pyrandom
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from ssl_emp.build import pretrain  # noqa: E402
from ssl_emp.checkpoint import load_checkpoint  # noqa: E402
from ssl_emp.config import load_pretrain_config  # noqa: E402
from ssl_emp.data import ImageBank, load_bank  # noqa: E402
from ssl_emp.data.variants import long_tailed, with_near_duplicates  # noqa: E402
from ssl_emp.evaluation.features import extract_features  # noqa: E402
from ssl_emp.evaluation.linear_classifier import train_linear_classifier  # noqa: E402
from ssl_emp.evaluation.pretrained import load_pretrained  # noqa: E402
from ssl_emp.pruning import Pruner, achieved_rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = str(ROOT / "data")
HEADLINE_RATE, SECOND_RATE = 0.9, 0.7
REPORT_SEEDS, SECOND_SEEDS, FLOOR_SEEDS = 10, 5, 5
CALIBRATION_SEEDS, SELECTION_SEEDS = (1000, 1001), (2000, 2001)
LONGTAIL_HEAD = 6000  # images in the long-tailed pool's largest class
PUBLISHED = ["pruning.scorer=loss", "pruning.selector=infobatch", "pruning.infobatch_r=0.5", "pruning.anneal=0.125"]
FAIR = ["pruning.warmup_epochs=1", "pruning.anneal=0"]  # the same warm-up, no anneal: selection alone
BAR_FLOOR, BAR_RANDOM = 0.08, 0.03


@dataclass
class Regime:
    base: str  # the dataset the images and the probe's labels come from
    recipe: str
    overrides: list[str]
    epochs: tuple[int, ...]  # candidates, cheapest first (calibration picks the first with headroom)
    size: Optional[int] = None  # the pretraining pool drawn from the base training split (None: all)
    variant: Optional[str] = None  # longtail | redundant
    metric: str = "top1"  # what the tables read: top1, or balanced accuracy where classes are imbalanced
    probe_per_class: int = 1000  # the probe's labelled training images per class (fewer where the split is small)
    val_per_class: int = 500
    notes: dict = field(default_factory=dict)


_SMALL = ["data.image_size=16", "model.width=8", "train.batch_size=256"]
REGIMES = {
    "digits": Regime("digits", "configs/default.yaml", ["model.width=8", "train.batch_size=128"], (12, 20, 30),
                     probe_per_class=100, val_per_class=30),
    "fashion-mnist": Regime("fashion-mnist", "configs/simclr_fashion_mnist.yaml", _SMALL, (12, 20, 30), size=10000),
    "longtail": Regime("fashion-mnist", "configs/simclr_fashion_mnist.yaml", _SMALL, (12, 20, 30),
                       variant="longtail", metric="balanced_acc"),
    "redundant": Regime("fashion-mnist", "configs/simclr_fashion_mnist.yaml", _SMALL, (20, 30, 40),
                        variant="redundant"),
}
COMMON = ["train.checkpoint_every=100000", "monitor.every=0", "tracking.wandb=disabled"]


def _emp(memory: str, selector: str = "eps_greedy", beta: float = 1.0) -> list[str]:
    return ["pruning.scorer=emp", f"pruning.selector={selector}", f"pruning.memory={memory}", f"pruning.beta={beta:g}"]


EMP_CANDIDATES = {
    **{f"emp[{m}]": _emp(m) for m in ("loss_change", "drift", "recency", "spaced", "disagreement", "entropy")},
    "emp[spaced,topk]": _emp("spaced", "topk"), "emp[loss_change,infobatch]": _emp("loss_change", "infobatch"),
}
LOSS_CANDIDATES = {
    "infobatch": ["pruning.scorer=loss", "pruning.selector=infobatch"],
    "eps_greedy": ["pruning.scorer=loss", "pruning.selector=eps_greedy"],
    "topk": ["pruning.scorer=loss", "pruning.selector=topk"],
    "ucb": ["pruning.scorer=ucb", "pruning.selector=topk"],
}
BASELINES = {"random": ["pruning.selector=random"], "rs2": ["pruning.selector=rs2"]}


def current_commit() -> str:
    """HEAD, with ``+dirty`` when the code a run depends on differs from it (the summary refuses those)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ssl_emp", "eval", "configs",
                            "benchmarks/pruning_quality.py"], cwd=ROOT, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


# --------------------------------------------------------------------------- data

@dataclass
class RegimeData:
    pool: ImageBank  # what pretraining sees
    probe_train: ImageBank
    validation: ImageBank
    test: ImageBank
    rarest: list[int]  # the 3 rarest classes of the pool (longtail)
    is_copy: Optional[torch.Tensor]  # [N] bool (redundant)


def _per_class(labels: torch.Tensor, counts: list[int], generator) -> list[torch.Tensor]:
    """Disjoint index sets, the i-th holding ``counts[i]`` images of every class (fewer if a class runs out)."""
    parts = [[] for _ in counts]
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in zip(parts, counts):
            part.append(members[start:start + count])
            start += count
    return [torch.cat(p).sort().values for p in parts]


def load_regime(name: str) -> RegimeData:
    """The regime's pretraining pool and probe sets, all from seed 0 (the same data for every run)."""
    regime = REGIMES[name]
    cfg = load_pretrain_config(ROOT / regime.recipe, [*regime.overrides, f"data.root={DATA_ROOT}"])
    train = load_bank(regime.base, cfg.data.root, "train", cfg.data.image_size)
    test = load_bank(regime.base, cfg.data.root, "test", cfg.data.image_size)
    generator = torch.Generator().manual_seed(0)
    validation, probe_train = _per_class(train.labels, [regime.val_per_class, regime.probe_per_class], generator)
    pool, rarest, is_copy = train, [], None
    if regime.size:
        pool = train.subset(torch.randperm(len(train), generator=generator)[:regime.size])
    if regime.variant == "longtail":
        made = long_tailed(train, imbalance=100, max_per_class=LONGTAIL_HEAD, seed=0)
        pool, rarest = made.bank, made.rarest[:3]
    elif regime.variant == "redundant":
        made = with_near_duplicates(train, unique=2000, bases=100, copies=39, max_shift=2, noise=8.0, seed=0)
        pool, is_copy = made.bank, made.is_copy
    return RegimeData(pool, train.subset(probe_train), train.subset(validation), test, rarest, is_copy)


# --------------------------------------------------------------------------- running

def _accuracy(logits: torch.Tensor, labels: torch.Tensor, classes: int, rarest: list[int]) -> dict:
    correct = (logits.argmax(1) == labels).float()
    per_class = [correct[labels == c].mean().item() if bool((labels == c).any()) else float("nan")
                 for c in range(classes)]
    result = {"top1": correct.mean().item(), "balanced_acc": statistics.mean(per_class), "per_class": per_class}
    if rarest:
        result["rare3"] = statistics.mean(per_class[c] for c in rarest)
    return result


def probe(checkpoint: Path, data: RegimeData, probe_epochs: int, random_init: bool = False, seed: int = 0) -> dict:
    """A linear probe on the backbone's frozen features: trained on ``probe_train``, read on the validation and
    test splits."""
    device = torch.device("cpu")
    pretrained = load_pretrained(str(checkpoint), device, random_init=random_init, seed=seed)
    features = {name: extract_features(pretrained.backbone, pretrained.normalize, bank, device, desc=name)
                for name, bank in (("train", data.probe_train), ("validation", data.validation), ("test", data.test))}
    classes = data.pool.num_classes
    classifier = train_linear_classifier(*features["train"], classes, epochs=probe_epochs, seed=0)
    with torch.no_grad():
        return {split: _accuracy(classifier(features[split][0]), features[split][1], classes, data.rarest)
                for split in ("validation", "test")}


def run_name(key: dict) -> str:
    text = f"{key['regime']}-{key['stage']}-{key['method']}-r{key['requested_rate']}-s{key['seed']}-e{key.get('epochs')}"
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def run_one(key: dict, overrides: list[str], data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """One pretraining run and its probe; returns the record (``key`` plus what was measured)."""
    regime = REGIMES[key["regime"]]
    cfg = load_pretrain_config(ROOT / regime.recipe, [
        *regime.overrides, *COMMON, *([] if "pruning.selector=full" in overrides else FAIR),
        f"train.epochs={key['epochs']}", *overrides, f"train.seed={key['seed']}",
        f"run.out_dir={workdir}", f"run.name={run_name(key)}", f"data.root={DATA_ROOT}"])
    started = time.perf_counter()
    result = pretrain(cfg, recipe=run_name(key), show_progress=False, train_bank=data.pool)
    train_seconds = time.perf_counter() - started
    measured = probe(result.checkpoint, data, probe_epochs)
    rhos = [h["pruning/memory_spearman"] for h in result.history if h.get("pruning/memory_spearman") is not None]
    full_forwards = key["epochs"] * len(data.pool)  # so full_equal_compute's shorter run counts as pruning
    record = {**key, "overrides": overrides, "commit": commit, "threads": torch.get_num_threads(),
              "achieved_rate": achieved_rate(result.sample_forwards, full_forwards),
              "sample_forwards": result.sample_forwards, "train_seconds": round(train_seconds, 2),
              "final_loss": result.final_loss, "visits_gini": result.history[-1].get("pruning/visits_gini"),
              "memory_spearman": statistics.mean(rhos) if rhos else None, **measured}
    if data.is_copy is not None:
        visits = load_checkpoint(result.checkpoint)["pruning"]["table"]["visits"].double().cpu()
        record["copy_forward_share"] = (visits[data.is_copy].sum() / visits.sum()).item()
    shutil.rmtree(result.run_dir, ignore_errors=True)  # hundreds of runs: keep the records, not the folders
    return record


def floor_record(regime_name: str, seed: int, data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """The random-init floor: the probe on an untrained backbone of the regime's architecture (a 2-image run
    writes the checkpoint that names the architecture; its weights are not used)."""
    regime = REGIMES[regime_name]
    key = {"regime": regime_name, "stage": "floor", "method": "floor", "requested_rate": None, "seed": seed}
    cfg = load_pretrain_config(ROOT / regime.recipe, [
        *regime.overrides, *COMMON, "train.epochs=1", "train.batch_size=2", f"train.seed={seed}",
        f"run.out_dir={workdir}", f"run.name={run_name(key)}", f"data.root={DATA_ROOT}"])
    result = pretrain(cfg, recipe="floor", show_progress=False, train_bank=data.pool.subset(torch.arange(2)))
    return {**key, "commit": commit, "threads": torch.get_num_threads(),
            **probe(result.checkpoint, data, probe_epochs, random_init=True, seed=seed)}


# --------------------------------------------------------------------------- planning

def metric(record: dict, split: str) -> float:
    return record[split][REGIMES[record["regime"]].metric]


def _records(records, **match):
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _calibration_key(regime: str, method: str, seed: int, epochs: int) -> dict:
    return {"regime": regime, "stage": "calibrate", "method": method,
            "requested_rate": 0.0 if method == "full" else HEADLINE_RATE, "seed": seed, "epochs": epochs}


def calibration(records: list[dict], regime: str) -> tuple[Optional[dict], list[tuple[dict, list[str]]]]:
    """The calibration rule (module docstring): (the decision, or None while undecided; the runs it needs)."""
    floors = [metric(r, "validation") for r in _records(records, regime=regime, stage="floor")]
    floor = statistics.mean(floors) if floors else None
    needed, tried = [], []
    for epochs in REGIMES[regime].epochs:
        runs = {method: [_calibration_key(regime, method, seed, epochs) for seed in CALIBRATION_SEEDS]
                for method in ("full", "random")}
        needed += [(key, ["pruning.selector=full"] if method == "full"
                    else ["pruning.selector=random", f"pruning.rate={HEADLINE_RATE}"])
                   for method, keys in runs.items() for key in keys]
        found = {method: [r for r in records if _key(r) in {_key(k) for k in keys}] for method, keys in runs.items()}
        if floor is None or any(len(found[m]) < len(CALIBRATION_SEEDS) for m in found):
            return None, needed
        full_mean = statistics.mean(metric(r, "validation") for r in found["full"])
        random_mean = statistics.mean(metric(r, "validation") for r in found["random"])
        tried.append({"epochs": epochs, "full_minus_floor": full_mean - floor,
                      "full_minus_random": full_mean - random_mean})
        if tried[-1]["full_minus_floor"] >= BAR_FLOOR and tried[-1]["full_minus_random"] >= BAR_RANDOM:
            return {"epochs": epochs, "meets_bar": True, "tried": tried}, needed
    best = max(tried, key=lambda t: t["full_minus_random"])
    return {"epochs": best["epochs"], "meets_bar": False, "tried": tried}, needed


def chosen(records: list[dict], candidates: dict, regimes: list[str]) -> Optional[dict]:
    """The selection rule (module docstring) over ``candidates``; None until every candidate ran everywhere."""
    scored = []
    for name, overrides in candidates.items():
        gains, rhos = [], []
        for regime in regimes:
            runs = _records(records, regime=regime, stage="select", method=name)
            refs = {r["seed"]: metric(r, "validation") for r in _records(records, regime=regime, stage="select",
                                                                          method="random")}
            if len(runs) < len(SELECTION_SEEDS) or len(refs) < len(SELECTION_SEEDS):
                return None
            gains.append(statistics.mean(metric(r, "validation") - refs[r["seed"]] for r in runs))
            rhos += [r["memory_spearman"] for r in runs if r.get("memory_spearman") is not None]
        rho = statistics.mean(rhos) if rhos else None
        if rho is None or abs(rho) <= 0.9:
            scored.append((statistics.mean(gains), name, rho))
    if not scored:
        return None
    gain, name, rho = max(scored)
    return {"method": name, "overrides": candidates[name], "validation_gain_over_random": gain,
            "memory_spearman": rho}


def equal_compute(num_samples: int, epochs: int, rate: float) -> list[str]:
    """All the data, stopped after exactly the sample-forwards a run pruned at ``rate`` plans."""
    forwards = Pruner(num_samples, epochs, rate=rate, selector="random", warmup_epochs=1, anneal=0.0
                      ).planned_forwards()
    return ["pruning.selector=full", f"train.max_forwards={forwards}"]


def planned_runs(regimes: list[str], records: list[dict], data_for) -> list[tuple[dict, list[str]]]:
    """(key, overrides) in the order of work; a stage's runs appear once the rule before it has decided."""
    todo, epochs = [], {}
    for regime in regimes:
        decided, needed = calibration(records, regime)
        todo += needed
        if decided:
            epochs[regime] = decided["epochs"]
    if len(epochs) < len(regimes):
        return todo
    for seed in SELECTION_SEEDS:
        for regime in regimes:
            for name, overrides in {"random": BASELINES["random"], **EMP_CANDIDATES, **LOSS_CANDIDATES}.items():
                key = {"regime": regime, "stage": "select", "method": name, "requested_rate": HEADLINE_RATE,
                       "seed": seed, "epochs": epochs[regime]}
                todo.append((key, [*overrides, f"pruning.rate={HEADLINE_RATE}"]))
    emp, loss_only = chosen(records, EMP_CANDIDATES, regimes), chosen(records, LOSS_CANDIDATES, regimes)
    if emp is None or loss_only is None:
        return todo
    methods = {**BASELINES, "emp": emp["overrides"], "best_loss": loss_only["overrides"]}
    for seed in range(REPORT_SEEDS):
        for regime in regimes:
            e = epochs[regime]
            report = {"regime": regime, "stage": "report", "seed": seed, "epochs": e}
            todo.append(({**report, "method": "full", "requested_rate": 0.0}, ["pruning.selector=full"]))
            for rate in (HEADLINE_RATE, SECOND_RATE) if seed < SECOND_SEEDS else (HEADLINE_RATE,):
                todo.append(({**report, "method": "full_equal_compute", "requested_rate": rate},
                             equal_compute(len(data_for(regime).pool), e, rate)))
                for name, overrides in methods.items():
                    todo.append(({**report, "method": name, "requested_rate": rate},
                                 [*overrides, f"pruning.rate={rate}"]))
            todo.append(({**report, "method": "infobatch_published", "requested_rate": None}, PUBLISHED))
            published = _records(records, **report, method="infobatch_published")
            if published:  # its references, at this seed's achieved rate and exact compute
                rate = round(published[0]["achieved_rate"], 4)
                todo.append(({**report, "method": "random@published", "requested_rate": rate},
                             [*BASELINES["random"], f"pruning.rate={rate}"]))
                todo.append(({**report, "method": "full_equal_compute@published", "requested_rate": rate},
                             ["pruning.selector=full", f"train.max_forwards={published[0]['sample_forwards']}"]))
            if seed < SECOND_SEEDS:  # at 0.7: at 0.9 the anneal would leave too few epochs to prune
                todo.append(({**report, "method": "emp+anneal", "requested_rate": SECOND_RATE},
                             [*emp["overrides"], f"pruning.rate={SECOND_RATE}", "pruning.anneal=0.125"]))
    return todo


def _key(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("regime", "stage", "method", "requested_rate", "seed", "epochs"))


# --------------------------------------------------------------------------- summarising

def paired_difference(runs: list[dict], references: list[dict], split: str = "test"):
    """Mean of the per-seed differences and its 95% t-interval; None without at least 2 shared seeds."""
    ref = {r["seed"]: metric(r, split) for r in references}
    diffs = [metric(r, split) - ref[r["seed"]] for r in runs if r["seed"] in ref]
    if len(diffs) < 2:
        return None
    mean = statistics.mean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(diffs)}


def gap_closure(runs: list[dict], random: list[dict], full: list[dict], resamples: int = 2000):
    """``(method - random) / (full - random)`` on seed means, with a 95% paired-bootstrap interval over seeds."""
    by_seed = [(metric(m, "test"), r, f) for m in runs
               for r in [metric(x, "test") for x in random if x["seed"] == m["seed"]]
               for f in [metric(x, "test") for x in full if x["seed"] == m["seed"]]]
    if len(by_seed) < 5:  # a bootstrap over fewer seeds has too few distinct resamples to give an interval
        return None

    def ratio(rows):
        gap = statistics.mean(f - r for _, r, f in rows)
        return statistics.mean(m - r for m, r, _ in rows) / gap if abs(gap) > 1e-12 else float("nan")

    rng = pyrandom.Random(0)
    draws = sorted(ratio([rng.choice(by_seed) for _ in by_seed]) for _ in range(resamples))
    draws = [d for d in draws if not math.isnan(d)]
    if not draws:
        return None
    return {"mean": ratio(by_seed), "lo": draws[int(0.025 * len(draws))], "hi": draws[int(0.975 * len(draws)) - 1],
            "n": len(by_seed)}


def min_detectable_effect(differences: list[dict]) -> Optional[float]:
    """The paired difference detectable at 80% power (two-sided 5%), from the spread of the per-seed
    differences against ``random`` at the headline rate: ``(t_.975 + t_.80) * sd / sqrt(n)``."""
    usable = [d for d in differences if d and d["n"] >= 2]
    if not usable:
        return None
    n = min(d["n"] for d in usable)
    sds = [(d["hi"] - d["mean"]) * math.sqrt(d["n"]) / stats.t.ppf(0.975, d["n"] - 1) for d in usable]
    return (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * statistics.median(sds) / math.sqrt(n)


class MixedCommits(ValueError):
    pass


def one_commit(records: list[dict]) -> str:
    commits = sorted({r.get("commit", "unknown") for r in records})
    if len(commits) != 1 or commits[0].endswith("+dirty") or commits[0] == "unknown":
        counts = {c: sum(r.get("commit", "unknown") == c for r in records) for c in commits}
        raise MixedCommits(f"the records come from {counts}: a table needs one clean commit. Re-run the runs "
                           "of the other commits from a worktree at one commit, or move them aside.")
    return commits[0]


def summarise(records: list[dict], out_dir: Path, regimes: list[str], remaining: Optional[int] = None) -> dict:
    commit = one_commit(records)
    summary = {"commit": commit, "complete": remaining == 0, "runs": len(records),
               "command": "python benchmarks/pruning_quality.py", "regimes": {},
               "headline_rate": HEADLINE_RATE,
               "emp_default": chosen(records, EMP_CANDIDATES, regimes),
               "best_loss_only": chosen(records, LOSS_CANDIDATES, regimes)}
    for regime in regimes:
        summary["regimes"][regime] = summarise_regime(records, regime)
    summary["recommended"] = recommend(summary)
    (out_dir / "pruning_quality_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "pruning_quality.md").write_text(markdown(summary))
    plot(summary, out_dir / "pruning_quality.png")
    return summary


def summarise_regime(records: list[dict], regime: str) -> dict:
    floors = [metric(r, "test") for r in _records(records, regime=regime, stage="floor")]
    report = _records(records, regime=regime, stage="report")
    groups: dict[tuple, list[dict]] = {}
    for r in report:
        rate = r["requested_rate"]
        method = r["method"]
        if method.endswith("@published") or method == "infobatch_published":
            rate = "published"
            method = method.split("@")[0]
        groups.setdefault((method, rate), []).append(r)
    full = groups.get(("full", 0.0), [])
    rows = []
    for (method, rate), group in sorted(groups.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        values = [metric(r, "test") for r in group]
        random_ref = groups.get(("random", rate), [])
        equal_ref = groups.get(("full_equal_compute", rate), [])
        row = {"method": method, "rate": rate, "n": len(group),
               "achieved_rate": statistics.mean(r["achieved_rate"] for r in group),
               "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
               "diff_vs_random": None if method in ("random", "full") else paired_difference(group, random_ref),
               "diff_vs_equal_compute": None if method in ("full_equal_compute", "full")
               else paired_difference(group, equal_ref),
               "gap_closure": None if method in ("random", "full") else gap_closure(group, random_ref, full),
               "memory_spearman": _mean_or_none(r.get("memory_spearman") for r in group),
               "visits_gini": _mean_or_none(r.get("visits_gini") for r in group),
               "train_seconds_median": statistics.median(r["train_seconds"] for r in group)}
        for extra in ("rare3", "top1", "balanced_acc"):
            row[extra] = _mean_or_none(r["test"].get(extra) for r in group)
        row["copy_forward_share"] = _mean_or_none(r.get("copy_forward_share") for r in group)
        rows.append(row)
    full_mean = statistics.mean(metric(r, "test") for r in full) if full else None
    random_means = {rate: statistics.mean(metric(r, "test") for r in g)
                    for (m, rate), g in groups.items() if m == "random" and rate != "published"}
    headline_diffs = [row["diff_vs_random"] for row in rows if row["rate"] == HEADLINE_RATE]
    decided, _ = calibration(records, regime)
    return {"metric": REGIMES[regime].metric, "epochs": decided["epochs"] if decided else None,
            "calibration": decided, "regime": _describe(regime),
            "floor": {"mean": statistics.mean(floors), "n": len(floors)} if floors else None,
            "full": full_mean,
            "headroom": {str(rate): full_mean - m for rate, m in random_means.items()} if full_mean else {},
            "min_detectable_effect": min_detectable_effect(headline_diffs), "rows": rows}


def _describe(regime: str) -> dict:
    r = REGIMES[regime]
    return {"base": r.base, "recipe": r.recipe, "overrides": [*r.overrides, *FAIR], "size": r.size,
            "variant": r.variant, "probe_per_class": r.probe_per_class, "val_per_class": r.val_per_class}


def recommend(summary: dict) -> dict:
    """Per regime: the method whose paired interval at the headline rate lies above 0 against both ``random``
    and ``full_equal_compute`` (the best mean if several); ``random`` where none does."""
    out = {}
    for regime, s in summary["regimes"].items():
        winners = [row for row in s["rows"] if row["rate"] == HEADLINE_RATE
                   and row["method"] not in ("random", "full", "full_equal_compute")
                   and row["diff_vs_random"] and row["diff_vs_random"]["lo"] > 0
                   and row["diff_vs_equal_compute"] and row["diff_vs_equal_compute"]["lo"] > 0]
        out[regime] = max(winners, key=lambda row: row["mean"])["method"] if winners else "random"
    return out


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _interval(d) -> str:
    if not d:
        return ""
    verdict = "" if d["lo"] > 0 or d["hi"] < 0 else " (n.s.)"
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{verdict}"


def markdown(summary: dict) -> str:
    lines = [f"Linear-probe results on the test split, commit `{summary['commit']}`, rate {HEADLINE_RATE} the "
             "headline. Paired differences per seed with the 95% t-interval (n.s.: it contains 0); gap closure "
             "`(method - random) / (full - random)` with a paired-bootstrap interval. Command: "
             "`.venv/bin/python benchmarks/pruning_quality.py`.", ""]
    for name in ("emp_default", "best_loss_only"):
        if summary[name]:
            lines.append(f"- {name}: `{summary[name]['method']}` (validation gain over random "
                         f"{summary[name]['validation_gain_over_random']:+.4f})")
    for regime, s in summary["regimes"].items():
        floor = f"{s['floor']['mean']:.4f} (n {s['floor']['n']})" if s["floor"] else "—"
        full = f"{s['full']:.4f}" if s["full"] is not None else "—"
        mde = f"{s['min_detectable_effect']:.4f}" if s["min_detectable_effect"] else "—"
        lines += ["", f"### {regime} ({s['metric']}, {s['epochs']} epochs)", "",
                  f"floor {floor}; full data {full}; headroom over random "
                  + ", ".join(f"{k}: {v:+.4f}" for k, v in s["headroom"].items())
                  + f"; smallest effect detectable at 80% power {mde}; recommended: "
                  f"`{summary['recommended'].get(regime)}`", "",
                  "| method | rate | achieved | n | metric | vs random | vs full_equal_compute | gap closure | "
                  "rare-3 | copy share | memory ρ |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in s["rows"]:
            cells = [row["method"], str(row["rate"]), f"{row['achieved_rate']:.3f}", str(row["n"]),
                     f"{row['mean']:.4f} ± {row['std']:.4f}", _interval(row["diff_vs_random"]),
                     _interval(row["diff_vs_equal_compute"]), _interval(row["gap_closure"]),
                     f"{row['rare3']:.3f}" if row.get("rare3") is not None else "",
                     f"{row['copy_forward_share']:.3f}" if row.get("copy_forward_share") is not None else "",
                     f"{row['memory_spearman']:.2f}" if row["memory_spearman"] is not None else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    regimes = [r for r, s in summary["regimes"].items() if s["rows"]]
    if not regimes:
        return
    fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.5), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        s = summary["regimes"][regime]
        if s["full"] is not None:
            ax.axhline(s["full"], color="black", linestyle="--", label="full data")
        if s["floor"]:
            ax.axhline(s["floor"]["mean"], color="red", linestyle=":", label="random-init floor")
        for method in sorted({row["method"] for row in s["rows"]} - {"full"}):
            points = sorted((row["achieved_rate"], row["mean"], row["std"]) for row in s["rows"]
                            if row["method"] == method)
            xs, ys, errs = zip(*points)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method,
                        linestyle="--" if method == "full_equal_compute" else "-")
        ax.set_title(f"SimCLR, {regime}")
        ax.set_xlabel("achieved rate (share of the full run's sample-forwards skipped)")
        ax.set_ylabel(f"linear probe {s['metric']} (mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main

def rerun(record: dict, probe_epochs: int = 50) -> dict:
    """Run one recorded row again at this checkout (what the reproduce-a-row test checks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(record["threads"])
    key = {k: record[k] for k in ("regime", "stage", "method", "requested_rate", "seed", "epochs")}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            return run_one(key, record["overrides"], load_regime(record["regime"]), workdir, probe_epochs, "rerun")
    finally:
        torch.set_num_threads(threads)


RESULTS_FILE, WORKER_FILES = "pruning_quality.jsonl", "pruning_quality.worker-*.jsonl"


def read_records(out_dir: Path) -> list[dict]:
    """Every record: the merged file's, then those the workers of a sitting have written since."""
    records = []
    for path in [out_dir / RESULTS_FILE, *sorted(out_dir.glob(WORKER_FILES))]:
        if path.is_file():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def merge_worker_files(out_dir: Path) -> list[dict]:
    """Fold the workers' record files into the merged file (atomically), so a killed sitting loses nothing, and drop
    the claims: a claimed run with no record (its worker was killed) is not done. Run where a sitting starts and
    ends, with no worker running."""
    records = read_records(out_dir)
    shutil.rmtree(out_dir / ".claims", ignore_errors=True)
    workers = sorted(out_dir.glob(WORKER_FILES))
    if workers:
        tmp = out_dir / (RESULTS_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(out_dir / RESULTS_FILE)
        for path in workers:
            path.unlink()
    return records


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _claim(claims: Path, key: dict) -> bool:
    """Exclusive-create a file named by the run's key: True for the one worker that gets there first."""
    name = hashlib.sha1(repr(_key(key)).encode()).hexdigest()
    try:
        os.close(os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def work(worker: int, out_dir: Path, plan, run, deadline: Optional[float] = None, wait: float = 10.0) -> int:
    """One worker's share of a sitting. Before each run it re-reads every record, so the plan is decided over all
    of them, and claims the first planned run that no one has recorded or claimed; a run another worker's result
    will unlock (a stage waiting on its rule) is waited for. ``plan(records)`` gives the planned (key, overrides)
    in the order of work; ``run(key, overrides)`` returns the record. Returns the number of runs it made."""
    claims = out_dir / ".claims"
    claims.mkdir(exist_ok=True)
    own, made = out_dir / WORKER_FILES.replace("*", str(worker)), 0
    while deadline is None or time.time() < deadline:
        records = read_records(out_dir)
        done = {_key(r) for r in records}
        todo = [(k, o) for k, o in plan(records) if _key(k) not in done]
        if not todo:
            break
        picked = next(((k, o) for k, o in todo if _claim(claims, k)), None)
        if picked is None:  # every planned run is someone's: wait for one that unlocks more, or for the end
            time.sleep(wait)
            continue
        record = run(*picked)
        _append(own, record)
        made += 1
        key = picked[0]
        print(f"[worker {worker}, {len(todo) - 1} planned] {key['regime']:13s} {key['stage']:9s} "
              f"{key['method']:28s} rate {key['requested_rate']} seed {key['seed']} ({key['epochs']} ep): achieved "
              f"{record['achieved_rate']:.3f}, val {metric(record, 'validation'):.4f}, "
              f"test {metric(record, 'test'):.4f}, {record['train_seconds']:.0f} s", flush=True)
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (recorded; a rerun uses the same)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the plan (each with --threads threads): one per free core")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--max-hours", type=float, default=None, help="stop starting runs after this long")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # set on the processes it starts
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = current_commit()
    if not args.summarise_only and commit.endswith("+dirty"):
        print(f"refusing to run: the checkout has uncommitted changes to code the runs depend on ({commit}); "
              "run from a clean worktree pinned at one commit", file=sys.stderr)
        return 2
    started = time.time()
    deadline = None if args.max_hours is None else started + args.max_hours * 3600
    cache: dict[str, RegimeData] = {}

    def data_for(regime):
        if regime not in cache:
            cache[regime] = load_regime(regime)
        return cache[regime]

    with tempfile.TemporaryDirectory() as workdir:
        def plan(records):
            return planned_runs(args.regimes, records, data_for)

        def run(key, overrides):
            return run_one(key, overrides, data_for(key["regime"]), workdir, args.probe_epochs, commit)

        if args.worker is not None:
            work(args.worker, out_dir, plan, run, deadline)
            return 0
        records = merge_worker_files(out_dir)
        for regime in args.regimes:
            for seed in range(FLOOR_SEEDS):
                if not _records(records, regime=regime, stage="floor", seed=seed) and not args.summarise_only:
                    records.append(floor_record(regime, seed, data_for(regime), workdir, args.probe_epochs, commit))
                    _append(out_dir / RESULTS_FILE, records[-1])
                    print(f"floor {regime} seed {seed}: {metric(records[-1], 'test'):.4f}", flush=True)
        if not args.summarise_only and args.workers == 1:
            work(0, out_dir, plan, run, deadline)
        elif not args.summarise_only:
            passed = list(argv if argv is not None else sys.argv[1:])
            workers = [subprocess.Popen([sys.executable, __file__, *passed, "--worker", str(k)])
                       for k in range(args.workers)]
            for process in workers:
                process.wait()
        records = merge_worker_files(out_dir)
        done = {_key(r) for r in records}
        remaining = sum(_key(k) not in done for k, _ in plan(records))
    if records and one_commit(records) != commit.removesuffix("+dirty"):
        print(f"note: these records ran at {one_commit(records)[:10]}, this checkout is {commit[:10]}: the tables use "
              "this checkout's regimes and rules; for the records' own, summarise from a worktree at their commit",
              file=sys.stderr)
    summary = summarise(records, out_dir, args.regimes, remaining)
    print(f"{len(records)} runs recorded, {remaining} planned runs left" + (" (complete)" if not remaining else ""))
    print((out_dir / "pruning_quality.md").read_text())
    print(f"wrote {out_dir / 'pruning_quality_summary.json'}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
