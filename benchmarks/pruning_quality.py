"""Can choosing samples pay at all, and where it can, does a selector find it? SimCLR, paired seeds, equal compute.

    .venv/bin/python benchmarks/pruning_quality.py                 # the whole benchmark (resumes; several sittings)
    .venv/bin/python benchmarks/pruning_quality.py --max-hours 1   # one sitting
    .venv/bin/python benchmarks/pruning_quality.py --workers 2     # one process per free core, sharing the plan
    .venv/bin/python benchmarks/pruning_quality.py --summarise-only

Run it from a clean checkout (a ``git worktree`` pinned at one commit): every record carries the commit it ran
at, and the summary refuses records of mixed commits. Each run is a real pretraining run, then a linear probe
trained on a labelled set and read on two held-out sets: a **validation** split carved from the training labels
(for every choice) and the **test** split (for what is reported). Each record also carries what its numbers
depend on besides the code: the CPU capability torch dispatches to, the CPU model, torch's version and threads.

**The oracle gate.** The benchmark at 8204556 (archive-8204556/) found no selector beating ``random`` at rate 0.9
in four regimes. Its headroom, full data - ``random``, is the value of more compute, which no selector can
recover. The headroom a selector needs is what the *best possible choice* gains over ``random`` at the same
compute. The ``oracle`` reads what no real selector may read, labels and copy and junk flags, and draws the same
budget with per-sample target rates (selector ``prior``): zero for copies (the bases stay) and for junk,
proportional to 1 / class size otherwise (class-balanced). All the criteria that apply at once: the best of the
oracles. A regime can judge a selector only where the oracle beats ``random`` by at least ``GATE`` (0.01) on the
test seeds, its paired 95% interval above 0 (``oracle_headroom`` in the summary).

Regimes: the four of 8204556 (``REGIMES``: ``digits``, ``fashion-mnist``, ``longtail``, ``redundant``), at the
epochs its calibration chose there and at 60: at rate 0.9, with the one full-data warm-up epoch every method gets,
a 12-epoch run spends 10/12 of its compute on the warm-up, which no selector chooses; at 60 epochs, 1/6. Then the
**search** (``CANDIDATES``) for regimes where the oracle can pay: exact duplicates at high share (90% of the pool
copies of 10 images), junk that competes with the real images (near-uniform patches, smooth noise textures, heavy
blur, another dataset's images) at 50-90% of the pool, a data-limited small pool over many epochs, more capacity
(width 16: four times the compute per image), and mixes of these.

Order of work, each stage deciding by a rule written here before it ran:

1. **floors**: the probe on untrained backbones (5 init seeds), for every regime and candidate.
2. **search** (seeds 3000-3002, validation, rate 0.9): for each regime and candidate, ``random``, the ``oracle``
   and ``full_equal_compute`` (all the data, stopped after exactly the pruned runs' sample-forwards) at each
   epoch count in ``epochs``, cheapest first, until one **passes**: the oracle beats ``random`` by >= ``GATE`` and
   the best of the three clears the random-init floor by >= 0.08, so the regime learns something at this compute
   (means over the seeds). One that never passes is recorded with the epochs of its largest oracle gap. The
   passing candidates with the largest gaps (at most ``MAX_NEW``) join the four regimes in the report.
3. **select** (seeds 2000-2001, validation, rate 0.9), only in reported regimes that passed the search: the
   ``coverage`` setting with the highest mean paired gain over ``random`` among ``COVERAGE_CANDIDATES`` (how
   often the embedding is refreshed, how strongly density lowers a rate, the neighbour radius).
4. **report** (seeds 0-9, test, rate 0.9): in every regime ``random``, the ``oracle`` and ``full_equal_compute``,
   and ``full`` on seeds 0-2 as context (ten times the compute); where the search passed, also ``rs2``, the EMP
   default (``emp[spaced]`` with ``eps_greedy``, chosen on validation at 8204556), ``ucb`` (the best loss-only
   selector there), ``coverage`` (as chosen), ``stratified`` (CCS over the loss) and ``central`` (easy first inside
   clusters). Seeds run round-robin, so an interrupted sitting leaves every row with comparable n.

**What would count** (written before the test seeds ran): each regime's ``oracle_headroom`` with its interval;
where it passes the gate, each selector's gap closure ``(selector - random) / (oracle - random)``; a selector is
recommended for a kind of data only if its paired interval lies above 0 against ``random`` and against
``full_equal_compute``. Where no regime passes, that is the result: at this scale the choice of samples does not
matter, even to an oracle, so prune at random; the GPU experiment (``benchmarks/gpu_science.sh``) is the next step.

Fair accounting: every method gets the same 1-epoch full-data warm-up and no full-data anneal, so the tables
compare selection alone. The learning rate follows the fraction of planned compute. ``coverage`` and ``central``
also spend one forward of every clean image per embedding refresh; each record carries those forwards and their
seconds, and the tables give them as a share of the run's training time (``embed share``).
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
from ssl_emp.data.variants import long_tailed, with_junk, with_near_duplicates  # noqa: E402
from ssl_emp.evaluation.features import extract_features  # noqa: E402
from ssl_emp.evaluation.linear_classifier import train_linear_classifier  # noqa: E402
from ssl_emp.evaluation.pretrained import load_pretrained  # noqa: E402
from ssl_emp.pruning import Pruner, achieved_rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = str(ROOT / "data")
HEADLINE_RATE = 0.9
REPORT_SEEDS, FLOOR_SEEDS, FULL_SEEDS = 10, 5, 3
SEARCH_SEEDS, SELECTION_SEEDS = (3000, 3001, 3002), (2000, 2001)
GATE = 0.01  # the oracle's least gain over random for a regime to judge a selector
BAR_FLOOR = 0.08  # full data's least margin over the random-init floor for a regime to measure anything
MAX_NEW = 2  # search candidates that join the report, at most (the largest validation oracle gaps)
FAIR = ["pruning.warmup_epochs=1", "pruning.anneal=0"]  # the same warm-up, no anneal: selection alone
ORACLE_FILE = "{oracle}"  # stands for the regime's oracle weights in a run's overrides (written at run time)


@dataclass
class Regime:
    base: str  # the dataset the images and the probe's labels come from
    recipe: str
    overrides: list[str]
    epochs: tuple[int, ...]  # candidates, cheapest first (the search takes the first where the oracle pays)
    size: Optional[int] = None  # the pretraining pool drawn from the base training split (None: all)
    variant: Optional[str] = None  # longtail | duplicates | junk
    variant_args: dict = field(default_factory=dict)
    metric: str = "top1"  # what the tables read: top1, or balanced accuracy where classes are imbalanced
    probe_per_class: int = 1000  # the probe's labelled training images per class (fewer where the split is small)
    val_per_class: int = 500


_SMALL = ["data.image_size=16", "model.width=8", "train.batch_size=256"]
_WIDE = ["data.image_size=16", "model.width=16", "train.batch_size=256"]  # 4x the small CNN's compute per image
_SMALL_POOL = ["data.image_size=16", "model.width=8", "train.batch_size=128"]  # 2,000 at 0.9 keep 200 an epoch
_FASHION = "configs/simclr_fashion_mnist.yaml"
# The four regimes of 8204556, first at the epochs its calibration chose there on validation, then at 60: at rate
# 0.9 a 12-epoch run spends 10/12 of its compute on the full-data warm-up epoch, which no selector chooses.
REGIMES = {
    "digits": Regime("digits", "configs/default.yaml", ["model.width=8", "train.batch_size=128"], (12, 60),
                     probe_per_class=100, val_per_class=30),
    "fashion-mnist": Regime("fashion-mnist", _FASHION, _SMALL, (12, 60), size=10000),
    "longtail": Regime("fashion-mnist", _FASHION, _SMALL, (12, 60), variant="longtail",
                       variant_args={"imbalance": 100, "max_per_class": 6000}, metric="balanced_acc"),
    "redundant": Regime("fashion-mnist", _FASHION, _SMALL, (20, 60), variant="duplicates",
                        variant_args={"unique": 2000, "bases": 100, "copies": 39, "max_shift": 2, "noise": 8.0}),
}
_DUPS90 = {"unique": 1000, "bases": 10, "copies": 900, "max_shift": 0, "noise": 0.0}  # 9,000 of 10,010: 90% copies
# The search, in the order it runs: each idea cheapest first, mixes after.
CANDIDATES = {
    "dups90": Regime("fashion-mnist", _FASHION, _SMALL, (30, 60, 120), variant="duplicates", variant_args=_DUPS90),
    "junk90-flat": Regime("fashion-mnist", _FASHION, _SMALL, (30, 60, 120), variant="junk",
                          variant_args={"real": 1000, "junk": 9000, "kind": "flat"}),
    "junk90-noise": Regime("fashion-mnist", _FASHION, _SMALL, (30, 60, 120), variant="junk",
                           variant_args={"real": 1000, "junk": 9000, "kind": "noise"}),
    "junk50-blur": Regime("fashion-mnist", _FASHION, _SMALL, (30, 60, 120), variant="junk",
                          variant_args={"real": 5000, "junk": 5000, "kind": "blur"}),
    "junk50-digits": Regime("fashion-mnist", _FASHION, _SMALL, (60, 120), variant="junk",
                            variant_args={"real": 1300, "junk": 1300, "kind": "other"}),
    "small2k": Regime("fashion-mnist", _FASHION, _SMALL_POOL, (100, 200), size=2000),
    "small2k-junk50-noise": Regime("fashion-mnist", _FASHION, _SMALL_POOL, (100, 200), variant="junk",
                                   variant_args={"real": 1000, "junk": 1000, "kind": "noise"}),
    "wide-fashion-mnist": Regime("fashion-mnist", _FASHION, _WIDE, (30, 60), size=10000),
    "wide-dups90": Regime("fashion-mnist", _FASHION, _WIDE, (30, 60), variant="duplicates", variant_args=_DUPS90),
    "wide-junk90-noise": Regime("fashion-mnist", _FASHION, _WIDE, (30, 60), variant="junk",
                                variant_args={"real": 1000, "junk": 9000, "kind": "noise"}),
}
ALL_REGIMES = {**REGIMES, **CANDIDATES}
COMMON = ["train.checkpoint_every=100000", "monitor.every=0", "tracking.wandb=disabled"]

BASELINES = {"random": ["pruning.selector=random"], "rs2": ["pruning.selector=rs2"]}
ORACLE = ["pruning.selector=prior", f"pruning.prior_file={ORACLE_FILE}"]
# Chosen on validation at 8204556: the EMP default (the code's defaults for a named scorer) and the best
# loss-only selector.
SELECTORS = {
    "emp": ["pruning.scorer=emp", "pruning.selector=eps_greedy"],
    "ucb": ["pruning.scorer=ucb", "pruning.selector=topk"],
    "stratified": ["pruning.scorer=loss", "pruning.selector=stratified"],
    "central": ["pruning.selector=central"],
}
COVERAGE_CANDIDATES = {
    "coverage": ["pruning.selector=coverage"],
    "coverage[power3]": ["pruning.selector=coverage", "pruning.coverage_power=3"],
    "coverage[every4]": ["pruning.selector=coverage", "pruning.embed_every=4"],
    "coverage[t0.99]": ["pruning.selector=coverage", "pruning.coverage_threshold=0.99"],
}


def current_commit() -> str:
    """HEAD, with ``+dirty`` when the code a run depends on differs from it (the summary refuses those)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ssl_emp", "eval", "configs",
                            "benchmarks/pruning_quality.py"], cwd=ROOT, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


def machine() -> dict:
    """What a record's numbers depend on besides the code and the seed: the same run on another CPU kernel (AVX2
    against AVX-512, say) or torch release sums in another order and ends a little elsewhere."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": model,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- data

@dataclass
class RegimeData:
    pool: ImageBank  # what pretraining sees
    probe_train: ImageBank
    validation: ImageBank
    test: ImageBank
    rarest: list[int]  # the 3 rarest classes of the pool (longtail)
    is_copy: Optional[torch.Tensor]  # [N] bool (duplicates)
    is_junk: Optional[torch.Tensor]  # [N] bool (junk)


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
    regime = ALL_REGIMES[name]
    cfg = load_pretrain_config(ROOT / regime.recipe, [*regime.overrides, f"data.root={DATA_ROOT}"])
    train = load_bank(regime.base, cfg.data.root, "train", cfg.data.image_size)
    test = load_bank(regime.base, cfg.data.root, "test", cfg.data.image_size)
    generator = torch.Generator().manual_seed(0)
    validation, probe_train = _per_class(train.labels, [regime.val_per_class, regime.probe_per_class], generator)
    pool, rarest, is_copy, is_junk = train, [], None, None
    if regime.size:
        pool = train.subset(torch.randperm(len(train), generator=generator)[:regime.size])
    args = regime.variant_args
    if regime.variant == "longtail":
        made = long_tailed(train, seed=0, **args)
        pool, rarest = made.bank, made.rarest[:3]
    elif regime.variant == "duplicates":
        made = with_near_duplicates(train, seed=0, **args)
        pool, is_copy = made.bank, made.is_copy
    elif regime.variant == "junk":
        other = load_bank("digits", None, "train", None) if args["kind"] == "other" else None
        made = with_junk(train, seed=0, other=other, **args)
        pool, is_junk = made.bank, made.is_junk
    return RegimeData(pool, train.subset(probe_train), train.subset(validation), test, rarest, is_copy, is_junk)


def oracle_weights(data: RegimeData) -> torch.Tensor:
    """Per-sample target weights no real selector could compute: 0 for copies (their bases stay) and for junk,
    1 / (the size of the sample's class) otherwise, so every class gets an equal share where it can."""
    labels = data.pool.labels.cpu()
    sizes = torch.bincount(labels[labels >= 0], minlength=data.pool.num_classes).double()
    weights = torch.where(labels >= 0, 1.0 / sizes[labels.clamp_min(0)].clamp_min(1.0), torch.zeros(len(labels),
                                                                                                   dtype=torch.float64))
    for excluded in (data.is_copy, data.is_junk):
        if excluded is not None:
            weights[excluded] = 0.0
    return weights


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


def _resolved(overrides: list[str], data: RegimeData, workdir: str, regime: str) -> list[str]:
    """``overrides`` with the oracle's placeholder replaced by a file of the regime's oracle weights."""
    if not any(ORACLE_FILE in o for o in overrides):
        return overrides
    path = Path(workdir) / f"oracle-{regime}.pt"
    if not path.is_file():
        torch.save(oracle_weights(data), path)
    return [o.replace(ORACLE_FILE, str(path)) for o in overrides]


def run_one(key: dict, overrides: list[str], data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """One pretraining run and its probe; returns the record (``key`` plus what was measured)."""
    regime = ALL_REGIMES[key["regime"]]
    cfg = load_pretrain_config(ROOT / regime.recipe, [
        *regime.overrides, *COMMON, *([] if "pruning.selector=full" in overrides else FAIR),
        f"train.epochs={key['epochs']}", *_resolved(overrides, data, workdir, key["regime"]),
        f"train.seed={key['seed']}", f"run.out_dir={workdir}", f"run.name={run_name(key)}", f"data.root={DATA_ROOT}"])
    started = time.perf_counter()
    result = pretrain(cfg, recipe=run_name(key), show_progress=False, train_bank=data.pool)
    train_seconds = time.perf_counter() - started
    measured = probe(result.checkpoint, data, probe_epochs)
    rhos = [h["pruning/memory_spearman"] for h in result.history if h.get("pruning/memory_spearman") is not None]
    full_forwards = key["epochs"] * len(data.pool)  # so full_equal_compute's shorter run counts as pruning
    last = result.history[-1]
    record = {**key, "overrides": overrides, "commit": commit, **machine(),
              "achieved_rate": achieved_rate(result.sample_forwards, full_forwards),
              "sample_forwards": result.sample_forwards, "train_seconds": round(train_seconds, 2),
              "embedding_forwards": last.get("pruning/embedding_forwards", 0),
              "embedding_seconds": round(last.get("pruning/embedding_seconds", 0.0), 2),
              "final_loss": result.final_loss, "visits_gini": last.get("pruning/visits_gini"),
              "memory_spearman": statistics.mean(rhos) if rhos else None, **measured}
    visits = load_checkpoint(result.checkpoint)["pruning"]["table"]["visits"].double().cpu()
    for name, flags in (("copy_forward_share", data.is_copy), ("junk_forward_share", data.is_junk)):
        if flags is not None:
            record[name] = (visits[flags].sum() / visits.sum()).item()
    if data.rarest:
        labels = data.pool.labels.cpu()
        record["rare3_forward_share"] = (visits[torch.isin(labels, torch.tensor(data.rarest))].sum()
                                         / visits.sum()).item()
    shutil.rmtree(result.run_dir, ignore_errors=True)  # hundreds of runs: keep the records, not the folders
    return record


def floor_record(regime_name: str, seed: int, data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """The random-init floor: the probe on an untrained backbone of the regime's architecture (a 2-image run
    writes the checkpoint that names the architecture; its weights are not used)."""
    regime = ALL_REGIMES[regime_name]
    key = floor_key(regime_name, seed)
    cfg = load_pretrain_config(ROOT / regime.recipe, [
        *regime.overrides, *COMMON, "train.epochs=1", "train.batch_size=2", f"train.seed={seed}",
        f"run.out_dir={workdir}", f"run.name={run_name(key)}", f"data.root={DATA_ROOT}"])
    result = pretrain(cfg, recipe="floor", show_progress=False, train_bank=data.pool.subset(torch.arange(2)))
    return {**key, "commit": commit, **machine(),
            **probe(result.checkpoint, data, probe_epochs, random_init=True, seed=seed)}


# --------------------------------------------------------------------------- planning

def metric(record: dict, split: str) -> float:
    return record[split][ALL_REGIMES[record["regime"]].metric]


def _records(records, **match):
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _key(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("regime", "stage", "method", "requested_rate", "seed", "epochs"))


def _mean(records: list[dict], split: str = "validation") -> float:
    return statistics.mean(metric(r, split) for r in records)


def floor_key(regime: str, seed: int) -> dict:
    return {"regime": regime, "stage": "floor", "method": "floor", "requested_rate": None, "seed": seed}


SEARCHED = ("random", "oracle", "full_equal_compute")  # all at the headline rate's compute


def search_keys(regime: str, epochs: int) -> dict[str, list[dict]]:
    return {method: [{"regime": regime, "stage": "search", "method": method, "requested_rate": HEADLINE_RATE,
                      "seed": seed, "epochs": epochs} for seed in SEARCH_SEEDS] for method in SEARCHED}


def search_overrides(method: str, num_samples: int, epochs: int) -> list[str]:
    if method == "full_equal_compute":
        return equal_compute(num_samples, epochs, HEADLINE_RATE)
    return [*(ORACLE if method == "oracle" else BASELINES[method]), f"pruning.rate={HEADLINE_RATE}"]


def searched(records: list[dict], regime: str,
             pool_size: Optional[int] = None) -> tuple[Optional[dict], list[tuple[dict, list[str]]]]:
    """The search rule (module docstring) for one regime: (its decision, or None while undecided; the runs it needs,
    given ``pool_size``, the size of the regime's pool)."""
    floors = _records(records, regime=regime, stage="floor")
    needed, tried = [], []
    for epochs in ALL_REGIMES[regime].epochs:
        keys = search_keys(regime, epochs)
        if pool_size is not None:
            needed += [(key, search_overrides(method, pool_size, epochs)) for method, group in keys.items()
                       for key in group]
        found = {method: [r for r in records if _key(r) in {_key(k) for k in group}] for method, group in keys.items()}
        if len(floors) < FLOOR_SEEDS or any(len(found[m]) < len(SEARCH_SEEDS) for m in found):
            return None, needed
        means = {m: _mean(found[m]) for m in SEARCHED}
        tried.append({"epochs": epochs, "oracle_gap": means["oracle"] - means["random"],
                      "best_minus_floor": max(means.values()) - _mean(floors),
                      "equal_compute_minus_random": means["full_equal_compute"] - means["random"], **means})
        if tried[-1]["oracle_gap"] >= GATE and tried[-1]["best_minus_floor"] >= BAR_FLOOR:
            return {**tried[-1], "passes": True, "tried": tried}, needed
    best = max(tried, key=lambda t: t["oracle_gap"])
    return {**best, "passes": False, "tried": tried}, needed


def report_regimes(decisions: dict[str, dict]) -> list[str]:
    """The four regimes, and the passing candidates with the largest validation oracle gaps (at most MAX_NEW)."""
    passing = sorted((d["oracle_gap"], name) for name, d in decisions.items() if name in CANDIDATES and d["passes"])
    return [*REGIMES, *[name for _, name in reversed(passing)][:MAX_NEW]]


def chosen_coverage(records: list[dict], regimes: list[str]) -> Optional[dict]:
    """The selection rule over COVERAGE_CANDIDATES in ``regimes``; None until every candidate ran everywhere."""
    scored = []
    for name, overrides in COVERAGE_CANDIDATES.items():
        gains = []
        for regime in regimes:
            runs = _records(records, regime=regime, stage="select", method=name)
            refs = {r["seed"]: metric(r, "validation") for r in _records(records, regime=regime, stage="select",
                                                                          method="random")}
            if len(runs) < len(SELECTION_SEEDS) or len(refs) < len(SELECTION_SEEDS):
                return None
            gains.append(statistics.mean(metric(r, "validation") - refs[r["seed"]] for r in runs))
        scored.append((statistics.mean(gains), name))
    gain, name = max(scored)
    return {"method": name, "overrides": COVERAGE_CANDIDATES[name], "validation_gain_over_random": gain}


def check_regimes_fit(regimes: list[str], data_for) -> None:
    """Refuse before any run where a regime's batch does not fit what its pruned epochs keep, at any of its epoch
    counts (a worker would otherwise stop hours in, at the first run of that regime)."""
    for name in regimes:
        regime = ALL_REGIMES[name]
        cfg = load_pretrain_config(ROOT / regime.recipe, [*regime.overrides, f"data.root={DATA_ROOT}"])
        for epochs in regime.epochs:
            pruner = Pruner(len(data_for(name).pool), epochs, rate=HEADLINE_RATE, selector="random", warmup_epochs=1,
                            anneal=0.0)
            try:
                pruner.check_batch_size(cfg.train.batch_size)
            except ValueError as exc:
                raise SystemExit(f"regime {name} at {epochs} epochs: {exc}") from None


def equal_compute(num_samples: int, epochs: int, rate: float) -> list[str]:
    """All the data, stopped after exactly the sample-forwards a run pruned at ``rate`` plans."""
    forwards = Pruner(num_samples, epochs, rate=rate, selector="random", warmup_epochs=1, anneal=0.0
                      ).planned_forwards()
    return ["pruning.selector=full", f"train.max_forwards={forwards}"]


def planned_runs(regimes: list[str], records: list[dict], data_for) -> list[tuple[dict, list[str]]]:
    """(key, overrides) in the order of work; a stage's runs appear once the rule before it has decided.
    ``regimes``: the regimes and candidates to search (default all); the report takes what the search passes."""
    todo = [(floor_key(regime, seed), []) for regime in regimes for seed in range(FLOOR_SEEDS)]
    decisions = {}
    for regime in regimes:
        decided, needed = searched(records, regime, len(data_for(regime).pool))
        todo += needed
        if decided:
            decisions[regime] = decided
    if len(decisions) < len(regimes):
        return todo
    reported = [r for r in report_regimes(decisions) if r in regimes]
    judged = [r for r in reported if decisions[r]["passes"]]
    coverage = None
    if judged:
        for seed in SELECTION_SEEDS:
            for regime in judged:
                for name, overrides in {"random": BASELINES["random"], **COVERAGE_CANDIDATES}.items():
                    key = {"regime": regime, "stage": "select", "method": name, "requested_rate": HEADLINE_RATE,
                           "seed": seed, "epochs": decisions[regime]["epochs"]}
                    todo.append((key, [*overrides, f"pruning.rate={HEADLINE_RATE}"]))
        coverage = chosen_coverage(records, judged)
        if coverage is None:
            return todo
    for seed in range(REPORT_SEEDS):
        for regime in reported:
            e = decisions[regime]["epochs"]
            report = {"regime": regime, "stage": "report", "seed": seed, "epochs": e}
            if seed < FULL_SEEDS:  # context, not a comparison: its compute is 1 / (1 - rate) times the others'
                todo.append(({**report, "method": "full", "requested_rate": 0.0}, ["pruning.selector=full"]))
            todo.append(({**report, "method": "full_equal_compute", "requested_rate": HEADLINE_RATE},
                         equal_compute(len(data_for(regime).pool), e, HEADLINE_RATE)))
            methods = {"random": BASELINES["random"], "oracle": ORACLE}
            if regime in judged:
                methods.update({"rs2": BASELINES["rs2"], **SELECTORS, "coverage": coverage["overrides"]})
            for name, overrides in methods.items():
                todo.append(({**report, "method": name, "requested_rate": HEADLINE_RATE},
                             [*overrides, f"pruning.rate={HEADLINE_RATE}"]))
    return todo


# --------------------------------------------------------------------------- summarising

def paired_difference(runs: list[dict], references: list[dict], split: str = "test"):
    """Mean of the per-seed differences and its 95% t-interval; None without at least 2 shared seeds."""
    ref = {r["seed"]: metric(r, split) for r in references}
    diffs = [metric(r, split) - ref[r["seed"]] for r in runs if r["seed"] in ref]
    if len(diffs) < 2:
        return None
    mean = statistics.mean(diffs)
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(diffs)}


def gap_closure(runs: list[dict], random: list[dict], oracle: list[dict], resamples: int = 2000):
    """``(method - random) / (oracle - random)`` on seed means: the share of what the best choice gains that the
    method gains, with a 95% paired-bootstrap interval over seeds."""
    by_seed = [(metric(m, "test"), r, o) for m in runs
               for r in [metric(x, "test") for x in random if x["seed"] == m["seed"]]
               for o in [metric(x, "test") for x in oracle if x["seed"] == m["seed"]]]
    if len(by_seed) < 5:  # a bootstrap over fewer seeds has too few distinct resamples to give an interval
        return None

    def ratio(rows):
        gap = statistics.mean(o - r for _, r, o in rows)
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


def passes_gate(headroom: Optional[dict]) -> bool:
    return bool(headroom and headroom["mean"] >= GATE and headroom["lo"] > 0)


def summarise(records: list[dict], out_dir: Path, regimes: list[str], remaining: Optional[int] = None) -> dict:
    commit = one_commit(records)
    decisions = {regime: searched(records, regime)[0] for regime in regimes}
    summary = {"commit": commit, "complete": remaining == 0, "runs": len(records),
               "command": "python benchmarks/pruning_quality.py", "headline_rate": HEADLINE_RATE, "gate": GATE,
               "machine": sorted({json.dumps({k: r.get(k) for k in ("cpu_capability", "cpu_model", "torch")})
                                  for r in records}),
               "search": {regime: {**(decisions[regime] or {}), "regime": _describe(regime)} for regime in regimes},
               "regimes": {}}
    reported = report_regimes({r: d for r, d in decisions.items() if d}) if all(decisions.values()) else list(REGIMES)
    judged = [r for r in reported if r in regimes and decisions.get(r) and decisions[r]["passes"]]
    summary["coverage_choice"] = chosen_coverage(records, judged) if judged else None
    for regime in reported:
        if regime in regimes:
            summary["regimes"][regime] = summarise_regime(records, regime)
    summary["oracle_headroom"] = {regime: s["oracle_headroom"] for regime, s in summary["regimes"].items()}
    summary["recommended"] = recommend(summary)
    (out_dir / "pruning_quality_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "pruning_quality.md").write_text(markdown(summary))
    plot(summary, out_dir / "pruning_quality.png")
    return summary


def summarise_regime(records: list[dict], regime: str) -> dict:
    floors = [metric(r, "test") for r in _records(records, regime=regime, stage="floor")]
    groups: dict[str, list[dict]] = {}
    for r in _records(records, regime=regime, stage="report"):
        groups.setdefault(r["method"], []).append(r)
    full, random, oracle = (groups.get(m, []) for m in ("full", "random", "oracle"))
    equal = groups.get("full_equal_compute", [])
    rows = []
    for method, group in sorted(groups.items()):
        values = [metric(r, "test") for r in group]
        row = {"method": method, "n": len(group), "achieved_rate": statistics.mean(r["achieved_rate"] for r in group),
               "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
               "diff_vs_random": None if method in ("random", "full") else paired_difference(group, random),
               "diff_vs_equal_compute": None if method in ("full_equal_compute", "full", "oracle")
               else paired_difference(group, equal),
               "gap_closure": None if method in ("random", "full", "oracle") else gap_closure(group, random, oracle),
               "memory_spearman": _mean_or_none(r.get("memory_spearman") for r in group),
               "visits_gini": _mean_or_none(r.get("visits_gini") for r in group),
               "train_seconds_median": statistics.median(r["train_seconds"] for r in group),
               "embed_share": _mean_or_none(r["embedding_seconds"] / r["train_seconds"] for r in group
                                            if r.get("embedding_forwards"))}
        for extra in ("rare3", "top1", "balanced_acc"):
            row[extra] = _mean_or_none(r["test"].get(extra) for r in group)
        for share in ("copy_forward_share", "junk_forward_share", "rare3_forward_share"):
            row[share] = _mean_or_none(r.get(share) for r in group)
        rows.append(row)
    headroom = paired_difference(oracle, random)
    headline_diffs = [row["diff_vs_random"] for row in rows if row["method"] not in ("full", "full_equal_compute")]
    full_mean = statistics.mean(metric(r, "test") for r in full) if full else None
    random_mean = statistics.mean(metric(r, "test") for r in random) if random else None
    decided = searched(records, regime)[0]
    return {"metric": ALL_REGIMES[regime].metric, "epochs": decided["epochs"] if decided else None,
            "regime": _describe(regime),
            "floor": {"mean": statistics.mean(floors), "n": len(floors)} if floors else None,
            "full": full_mean, "headroom": full_mean - random_mean if full_mean is not None and random_mean else None,
            "oracle_headroom": {**headroom, "passes": passes_gate(headroom)} if headroom else None,
            "min_detectable_effect": min_detectable_effect(headline_diffs), "rows": rows}


def _describe(regime: str) -> dict:
    r = ALL_REGIMES[regime]
    return {"base": r.base, "recipe": r.recipe, "overrides": [*r.overrides, *FAIR], "size": r.size,
            "variant": r.variant, "variant_args": r.variant_args, "probe_per_class": r.probe_per_class,
            "val_per_class": r.val_per_class, "epochs_tried": list(r.epochs)}


def recommend(summary: dict) -> dict:
    """Per regime that passes the gate on test: the method whose paired interval lies above 0 against both
    ``random`` and ``full_equal_compute`` (the best mean if several), else ``random``; elsewhere ``random``, as
    no choice of samples paid there, not even the oracle's."""
    out = {}
    for regime, s in summary["regimes"].items():
        winners = [row for row in s["rows"] if row["method"] not in ("random", "full", "full_equal_compute", "oracle")
                   and row["diff_vs_random"] and row["diff_vs_random"]["lo"] > 0
                   and row["diff_vs_equal_compute"] and row["diff_vs_equal_compute"]["lo"] > 0]
        judged = s["oracle_headroom"] and s["oracle_headroom"]["passes"]
        out[regime] = max(winners, key=lambda row: row["mean"])["method"] if judged and winners else "random"
    return out


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _interval(d) -> str:
    if not d:
        return ""
    verdict = "" if d["lo"] > 0 or d["hi"] < 0 else " (n.s.)"
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{verdict}"


def _cell(value, spec=".3f") -> str:
    return "" if value is None else format(value, spec)


def markdown(summary: dict) -> str:
    lines = [f"Linear-probe results, commit `{summary['commit']}`, rate {HEADLINE_RATE}, equal sample-forwards. "
             "Paired differences per seed with the 95% t-interval (n.s.: it contains 0). Command: "
             "`.venv/bin/python benchmarks/pruning_quality.py`.", "",
             f"## The search (validation, seeds {SEARCH_SEEDS[0]}-{SEARCH_SEEDS[-1]}): where can a choice of samples "
             f"pay at all?", "",
             f"A regime passes where the oracle beats `random` by >= {GATE} and the best of the three clears the "
             f"random-init floor by >= {BAR_FLOOR} (means over the seeds).", "",
             "| regime | epochs | compute (epochs of the pool) | random | oracle − random "
             "| all data at equal compute − random | best − floor | passes |", "|---|---|---|---|---|---|---|---|"]
    for regime, d in summary["search"].items():
        for t in d.get("tried", []):
            lines.append(f"| {regime} | {t['epochs']} | {(1 - HEADLINE_RATE) * t['epochs']:.1f} | {t['random']:.4f} | "
                         f"{t['oracle_gap']:+.4f} | {t['equal_compute_minus_random']:+.4f} | "
                         f"{t['best_minus_floor']:+.4f} | "
                         f"{'yes' if d['passes'] and t['epochs'] == d['epochs'] else ''} |")
    if summary.get("coverage_choice"):
        c = summary["coverage_choice"]
        lines += ["", f"coverage setting chosen on validation: `{c['method']}` (gain over random "
                  f"{c['validation_gain_over_random']:+.4f})"]
    lines += ["", f"## The report (test, seeds 0-{REPORT_SEEDS - 1})"]
    for regime, s in summary["regimes"].items():
        floor = f"{s['floor']['mean']:.4f} (n {s['floor']['n']})" if s["floor"] else "—"
        mde = f"{s['min_detectable_effect']:.4f}" if s["min_detectable_effect"] else "—"
        gate = s["oracle_headroom"]
        lines += ["", f"### {regime} ({s['metric']}, {s['epochs']} epochs)", "",
                  f"floor {floor}; full data {_cell(s['full'], '.4f')}; "
                  f"full − random {_cell(s['headroom'], '+.4f')}; "
                  f"**oracle headroom {_interval(gate)}** ({'passes' if gate and gate['passes'] else 'does not pass'}"
                  f" the gate); smallest effect detectable at 80% power {mde}; recommended: "
                  f"`{summary['recommended'].get(regime)}`", "",
                  "| method | achieved | n | metric | vs random | vs full_equal_compute | gap closure (of oracle's) | "
                  "rare-3 | copy share | junk share | embed share |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in s["rows"]:
            cells = [row["method"], f"{row['achieved_rate']:.3f}", str(row["n"]),
                     f"{row['mean']:.4f} ± {row['std']:.4f}",
                     _interval(row["diff_vs_random"]), _interval(row["diff_vs_equal_compute"]),
                     _interval(row["gap_closure"]), _cell(row.get("rare3")), _cell(row.get("copy_forward_share")),
                     _cell(row.get("junk_forward_share")), _cell(row.get("embed_share"))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Per regime, each method's paired difference from ``random`` with its interval; the oracle's in black."""
    regimes = [r for r, s in summary["regimes"].items() if s["rows"]]
    if not regimes:
        return
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.6 * len(regimes), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        s = summary["regimes"][regime]
        rows = [row for row in s["rows"] if row["diff_vs_random"] and row["method"] != "full"]
        for y, row in enumerate(rows):
            d = row["diff_vs_random"]
            ax.errorbar(d["mean"], y, xerr=[[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]], fmt="o", capsize=3,
                        color="black" if row["method"] == "oracle" else "tab:blue")
        ax.set_yticks(range(len(rows)), [row["method"] for row in rows])
        ax.axvline(0, color="grey", linewidth=1)
        ax.axvline(GATE, color="red", linestyle=":", linewidth=1, label=f"gate ({GATE})")
        ax.set_title(f"{regime} ({s['epochs']} epochs)")
        ax.set_xlabel(f"{s['metric']} − random, rate {HEADLINE_RATE} (95% CI)")
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
        ran = (f"achieved {record['achieved_rate']:.3f}, " if "achieved_rate" in record else "")
        print(f"[worker {worker}, {len(todo) - 1} planned] {key['regime']:20s} {key['stage']:7s} "
              f"{key['method']:18s} rate {key['requested_rate']} seed {key['seed']} ({key.get('epochs')} ep): {ran}"
              f"val {metric(record, 'validation'):.4f}, test {metric(record, 'test'):.4f}"
              + (f", {record['train_seconds']:.0f} s" if "train_seconds" in record else ""), flush=True)
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=list(ALL_REGIMES), choices=list(ALL_REGIMES),
                        help="regimes and search candidates (default: all)")
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

    if not args.summarise_only and args.worker is None:
        check_regimes_fit(args.regimes, data_for)
    with tempfile.TemporaryDirectory() as workdir:
        def plan(records):
            return planned_runs(args.regimes, records, data_for)

        def run(key, overrides):
            if key["stage"] == "floor":
                return floor_record(key["regime"], key["seed"], data_for(key["regime"]), workdir, args.probe_epochs,
                                    commit)
            return run_one(key, overrides, data_for(key["regime"]), workdir, args.probe_epochs, commit)

        if args.worker is not None:
            work(args.worker, out_dir, plan, run, deadline)
            return 0
        records = merge_worker_files(out_dir)
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
