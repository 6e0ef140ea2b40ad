"""Does EMP beat what a user gets for free at the same compute? SimCLR on real data, paired seeds.

    .venv/bin/python benchmarks/pruning_quality.py            # the whole benchmark (resumes; several sittings)
    .venv/bin/python benchmarks/pruning_quality.py --quick    # a smoke run: digits, 2 seeds, a few methods
    .venv/bin/python benchmarks/pruning_quality.py --summarise-only

Every run is a real pretraining run followed by the linear probe on held-out data. Each comparison carries
its controls (DESIGN.md, "How a pruning method is judged"):

- the random-init **floor**: the same probe on untrained backbones of the same architecture (5 init seeds);
- ``random`` (a fresh uniform subset every epoch, drawn without replacement), ``rs2`` (without replacement
  across epochs: every sample once before any twice) and ``full_equal_compute``
  (all the data for ``round((1 - rate) * epochs)`` epochs, the same schedule shape compressed);
- ``infobatch_published`` (the paper's rule, r = 0.5, delta = 0.875: its own achieved rate, and ``random``
  and ``full_equal_compute`` run again at that rate as its references) beside the budget-matched ``infobatch``;
- **paired seeds**: seed s gives every method the same initial weights and the same probe, and every
  difference is taken per seed, with a 95% t-interval.

Order of work, so that an interrupted benchmark has the most useful part done: the floors, then rate 0.7
for both datasets (5 seeds, with the EMP ablation), then the EMP default is chosen by the rule below, then
rates 0.5 and 0.3 (3 seeds). Results are appended to ``results/pruning_quality.jsonl`` as they finish (a
rerun skips what is there); ``results/pruning_quality.md``, ``.png`` and ``pruning_quality_summary.json``
are rewritten from all of it.

**The rule for the EMP default, fixed before the choice is made**: among the EMP ablation settings at rate
0.7 whose memory term's mean Spearman correlation with the loss is at most 0.9 in absolute value (a term
that ranks exactly against the loss is as redundant as one that ranks with it), the one with the highest
top-1 averaged over the datasets' seed means.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from eval.linear_probe import linear_probe  # noqa: E402
from ssl_emp.config import load_pretrain_config  # noqa: E402
from ssl_emp.data import load_bank  # noqa: E402
from ssl_emp.build import pretrain  # noqa: E402
from ssl_emp.pruning import achieved_rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = str(ROOT / "data")

# Each dataset: the recipe, the overrides that size it for a 2-core CPU (README, "Why this regime"), and the
# probe's labelled training subset.
DATASETS = {
    "digits": {"recipe": "configs/default.yaml", "epochs": 60,
               "overrides": ["model.width=8", "train.checkpoint_every=1000", "monitor.every=0"],
               "probe_subset": None},
    "fashion-mnist": {"recipe": "configs/simclr_fashion_mnist.yaml", "epochs": 15,
                      "overrides": ["data.subset=10000", "data.image_size=16", "model.width=8",
                                    "train.batch_size=256", "train.checkpoint_every=1000", "monitor.every=0"],
                      "probe_subset": 10000},
}
MAIN_RATE = 0.7
SEEDS = {0.3: 3, 0.5: 3, 0.7: 5}
FLOOR_SEEDS = 5
PUBLISHED_R = 0.5  # InfoBatch's published rule; delta = 0.875 is the recipes' pruning.anneal = 0.125

# Compared at every rate (``emp`` is the default form, resolved by the rule above).
METHODS = {
    "random": ["pruning.selector=random"],
    "rs2": ["pruning.selector=rs2"],
    "infobatch": ["pruning.scorer=loss", "pruning.selector=infobatch"],
    "ucb": ["pruning.scorer=ucb", "pruning.selector=topk"],
    "eps_greedy": ["pruning.scorer=loss", "pruning.selector=eps_greedy"],
    "emp": None,
}
REFERENCES = ("random", "full_equal_compute")


def _emp(form: str, beta: float, selector: str = "infobatch") -> list[str]:
    return ["pruning.scorer=emp", f"pruning.selector={selector}", f"pruning.memory={form}", f"pruning.beta={beta:g}"]


# The EMP ablation at rate 0.7: every memory form at beta 1; beta 0.5 and 2 for the forms that look past the
# current forward pass; those forms under a unit-weight selector too. Names: emp[form,beta(,selector)].
PAST_FORMS = ("drift", "loss_change", "recency")
ABLATIONS = {
    **{f"emp[{form},1]": _emp(form, 1.0) for form in (*PAST_FORMS, "entropy", "agreement")},
    **{f"emp[{form},{beta:g}]": _emp(form, beta) for form in PAST_FORMS for beta in (0.5, 2.0)},
    **{f"emp[{form},1,eps_greedy]": _emp(form, 1.0, "eps_greedy") for form in PAST_FORMS},
}


# --------------------------------------------------------------------------- planning

def choose_emp_default(records: list[dict], datasets: list[str], seeds: int = SEEDS[MAIN_RATE]):
    """The rule (module docstring); None until every ablation has all its seeds on every dataset."""
    candidates = []
    for name in ABLATIONS:
        runs = [r for r in records if r["method"] == name and r["requested_rate"] == MAIN_RATE]
        per_dataset = [[r for r in runs if r["dataset"] == d] for d in datasets]
        if any(len(rs) < seeds for rs in per_dataset):
            return None
        rho = [r["memory_spearman"] for r in runs if r.get("memory_spearman") is not None]
        mean_rho = statistics.mean(rho) if rho else None
        top1 = statistics.mean(statistics.mean(r["top1"] for r in rs) for rs in per_dataset)
        candidates.append((name, top1, mean_rho))
    eligible = [c for c in candidates if c[2] is not None and abs(c[2]) <= 0.9]
    if not eligible:
        return None
    name, top1, rho = max(eligible, key=lambda c: c[1])
    overrides = ABLATIONS[name]
    form = next(o.split("=")[1] for o in overrides if o.startswith("pruning.memory="))
    beta = float(next(o.split("=")[1] for o in overrides if o.startswith("pruning.beta=")))
    selector = next(o.split("=")[1] for o in overrides if o.startswith("pruning.selector="))
    return {"ablation": name, "memory": form, "beta": beta, "selector": selector, "mean_top1_at_0.7": top1,
            "memory_spearman": rho, "overrides": overrides}


def equal_compute_overrides(dataset: str, rate: float) -> list[str]:
    """All the data for round((1 - rate) * epochs) epochs; the LR warm-up shrinks with the schedule."""
    spec = DATASETS[dataset]
    recipe = load_pretrain_config(ROOT / spec["recipe"], spec["overrides"])
    epochs = max(1, round((1 - rate) * spec["epochs"]))
    warmup = recipe.optim.warmup_epochs * epochs / spec["epochs"]
    return ["pruning.selector=full", f"train.epochs={epochs}", f"optim.warmup_epochs={warmup:g}"]


def planned_runs(datasets, records, rates, seeds_at, quick=False):
    """(dataset, method, rate, seed, overrides) in the order of work; methods whose overrides depend on
    earlier results (the EMP default, the published rule's references) appear once those exist."""
    def stage(rate_list, with_extras):
        for dataset in datasets:
            for seed in range(max((seeds_at[r] for r in rate_list), default=0)):
                if with_extras:
                    yield dataset, "full", 0.0, seed, ["pruning.selector=full"]
                    yield dataset, "infobatch_published", None, seed, [
                        "pruning.scorer=loss", "pruning.selector=infobatch", f"pruning.infobatch_r={PUBLISHED_R}"]
                for rate in rate_list:
                    if seed >= seeds_at[rate]:
                        continue
                    yield dataset, "full_equal_compute", rate, seed, equal_compute_overrides(dataset, rate)
                    for method, overrides in METHODS.items():
                        if method == "emp":
                            overrides = (emp_default or {}).get("overrides")
                            if overrides is None:
                                continue
                        yield dataset, method, rate, seed, [*overrides, f"pruning.rate={rate}"]
                    if with_extras and rate == MAIN_RATE and not quick:
                        for name, overrides in ABLATIONS.items():
                            yield dataset, name, rate, seed, [*overrides, f"pruning.rate={rate}"]
            # The published rule's references run at its achieved rate, known once all its seeds are in.
            published = [r for r in records if r["dataset"] == dataset and r["method"] == "infobatch_published"]
            if with_extras and len(published) >= seeds_at[MAIN_RATE]:
                rate = published_rate(records, dataset)
                for seed in range(min(seeds_at.values())):
                    yield dataset, "full_equal_compute", rate, seed, equal_compute_overrides(dataset, rate)
                    yield dataset, "random", rate, seed, [*METHODS["random"], f"pruning.rate={rate}"]

    emp_default = choose_emp_default(records, datasets, seeds_at[MAIN_RATE])
    main = [r for r in rates if r == MAIN_RATE]
    yield from stage(main or rates[:1], True)
    yield from stage([r for r in rates if r not in main], False)


def published_rate(records, dataset):
    """The mean achieved rate of the published InfoBatch rule, to 2 decimals (its references run there)."""
    rates = [r["achieved_rate"] for r in records if r["dataset"] == dataset and r["method"] == "infobatch_published"]
    return round(statistics.mean(rates), 2) if rates else None


# --------------------------------------------------------------------------- running

def run_one(dataset, method, rate, seed, overrides, bank, workdir, probe_epochs):
    spec = DATASETS[dataset]
    name = f"{dataset}-{method}-r{rate}-s{seed}".replace("[", "_").replace("]", "").replace(",", "_")
    cfg = load_pretrain_config(ROOT / spec["recipe"], [
        f"train.epochs={spec['epochs']}", *spec["overrides"], *overrides, f"train.seed={seed}",
        "tracking.wandb=disabled", f"run.out_dir={workdir}", f"run.name={name}", f"data.root={DATA_ROOT}"])
    started = time.perf_counter()
    result = pretrain(cfg, recipe=name, show_progress=False, train_bank=bank)
    train_seconds = time.perf_counter() - started
    probe = linear_probe(str(result.run_dir), epochs=probe_epochs, data_root=DATA_ROOT,
                         train_subset=spec["probe_subset"], seed=0)
    # Against the full schedule's forwards, so full_equal_compute's shorter run counts as pruning.
    full_forwards = spec["epochs"] * len(bank)
    rhos = [h["pruning/memory_spearman"] for h in result.history if h.get("pruning/memory_spearman") is not None]
    return {"dataset": dataset, "method": method, "requested_rate": rate, "seed": seed,
            "achieved_rate": achieved_rate(result.sample_forwards, full_forwards),
            "sample_forwards": result.sample_forwards,
            "train_seconds": round(train_seconds, 2), "top1": probe["top1"], "final_loss": result.final_loss,
            "visits_gini": result.history[-1].get("pruning/visits_gini"),
            "memory_spearman": statistics.mean(rhos) if rhos else None, "overrides": overrides}


def floor_record(dataset, seed, workdir, probe_epochs, bank):
    """The random-init floor: the probe on an untrained backbone of the benchmark's architecture."""
    spec = DATASETS[dataset]
    cfg = load_pretrain_config(ROOT / spec["recipe"], [
        "train.epochs=1", *spec["overrides"], f"train.seed={seed}", "tracking.wandb=disabled",
        f"run.out_dir={workdir}", f"run.name={dataset}-floor-s{seed}", f"data.root={DATA_ROOT}",
        "train.batch_size=2", "data.subset=2"])
    result = pretrain(cfg, recipe="floor", show_progress=False, train_bank=bank.subset(range(2)))
    probe = linear_probe(str(result.run_dir), random_init=True, epochs=probe_epochs, data_root=DATA_ROOT,
                         train_subset=spec["probe_subset"], seed=seed)
    return {"dataset": dataset, "method": "floor", "requested_rate": None, "seed": seed, "top1": probe["top1"]}


# --------------------------------------------------------------------------- summarising

def paired_difference(runs: list[dict], references: list[dict]):
    """Mean of the per-seed differences and its 95% t-interval; None without at least 2 shared seeds."""
    ref = {r["seed"]: r["top1"] for r in references}
    diffs = [r["top1"] - ref[r["seed"]] for r in runs if r["seed"] in ref]
    if len(diffs) < 2:
        return None
    mean = statistics.mean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(diffs)}


def summarise(records: list[dict], out_dir: Path, datasets: list[str]) -> dict:
    floors = {d: [r["top1"] for r in records if r["method"] == "floor" and r["dataset"] == d] for d in datasets}
    # The emp row at 0.7 is the chosen ablation's runs (the records named emp there may predate the choice).
    runs = [r for r in records if r["method"] != "floor"
            and not (r["method"] == "emp" and r["requested_rate"] == MAIN_RATE)]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        rate = r["requested_rate"]
        if r["method"] == "infobatch_published":
            rate = published_rate(runs, r["dataset"])
        groups.setdefault((r["dataset"], r["method"], rate), []).append(r)
    emp_default = choose_emp_default(runs, datasets)
    if emp_default:
        for d in datasets:
            chosen = groups.get((d, emp_default["ablation"], MAIN_RATE))
            if chosen:
                groups[(d, "emp", MAIN_RATE)] = chosen

    rows = []
    for (dataset, method, rate), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2] or 0, kv[0][1])):
        top1 = [r["top1"] for r in group]
        row = {"dataset": dataset, "method": method, "rate": rate,
               "achieved_rate": statistics.mean(r["achieved_rate"] for r in group), "n": len(group),
               "mean": statistics.mean(top1), "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
               "memory_spearman": _mean_or_none(r.get("memory_spearman") for r in group),
               "visits_gini": _mean_or_none(r.get("visits_gini") for r in group),
               "train_seconds_median": statistics.median(r["train_seconds"] for r in group)}
        for ref_name, key in (("random", "diff_vs_random"), ("full_equal_compute", "diff_vs_equal_compute")):
            ref = groups.get((dataset, ref_name, rate)) if rate else None
            row[key] = None if method == ref_name or not ref else paired_difference(group, ref)
        rows.append(row)
    summary = {
        "recommended": recommend(rows, datasets, emp_default),
        "floor": {d: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                  for d, v in floors.items() if v},
        "rows": rows,
        "emp_default": emp_default,
        "memory_spearman": emp_default["memory_spearman"] if emp_default else None,
        "command": "python benchmarks/pruning_quality.py",
        "regime": {d: {"recipe": DATASETS[d]["recipe"], "epochs": DATASETS[d]["epochs"],
                       "overrides": DATASETS[d]["overrides"]} for d in datasets},
    }
    (out_dir / "pruning_quality_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "pruning_quality.md").write_text(markdown_table(summary))
    plot(summary, out_dir / "pruning_quality.png")
    return summary


def recommend(rows: list[dict], datasets: list[str], emp_default):
    """What ``pruning.rate`` alone should use (DESIGN.md: a method is worth using only if it beats what a user
    gets for free at the same compute): among the methods whose paired interval against ``random`` at rate 0.7
    lies above 0 on every dataset, the one with the highest mean top-1 over the datasets; when none does,
    ``random`` itself. (``full_equal_compute`` is no selector; the README sets it beside the winner.)"""
    winners = []
    for method, overrides in METHODS.items():
        if method == "random" or (method == "emp" and not emp_default):
            continue
        cells = [r for r in rows if r["method"] == method and r["rate"] == MAIN_RATE]
        if len(cells) == len(datasets) and all(r["diff_vs_random"] and r["diff_vs_random"]["lo"] > 0 for r in cells):
            winners.append((statistics.mean(r["mean"] for r in cells), method,
                            emp_default["overrides"] if method == "emp" else overrides))
    if not winners:
        return {"method": "random", "beats_random": False, "overrides": METHODS["random"]}
    _, method, overrides = max(winners)
    return {"method": method, "beats_random": True, "overrides": overrides}


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _interval(diff) -> str:
    if diff is None:
        return ""
    verdict = "" if diff["lo"] > 0 or diff["hi"] < 0 else " (not significant)"
    return f"{diff['mean']:+.4f} [{diff['lo']:+.4f}, {diff['hi']:+.4f}]{verdict}"


def markdown_table(summary: dict) -> str:
    lines = ["Linear-probe top-1 (mean ± std over paired seeds). Differences are paired per seed, with the "
             "95% t-interval; `not significant` where it contains 0. Command: "
             "`.venv/bin/python benchmarks/pruning_quality.py`.", ""]
    for dataset, floor in summary["floor"].items():
        lines.append(f"**{dataset}** random-init floor: {floor['mean']:.4f} ± {floor['std']:.4f} "
                     f"({floor['n']} init seeds)")
    lines += ["", "| dataset | method | rate | achieved | n | top-1 | − floor | vs random | vs full_equal_compute | "
              "memory ρ | visits Gini |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        floor = summary["floor"].get(row["dataset"], {}).get("mean")
        rho = f"{row['memory_spearman']:.3f}" if row["memory_spearman"] is not None else ""
        gini = f"{row['visits_gini']:.3f}" if row["visits_gini"] is not None else ""
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['rate'] if row['rate'] is not None else ''} | "
            f"{row['achieved_rate']:.3f} | {row['n']} | {row['mean']:.4f} ± {row['std']:.4f} | "
            f"{row['mean'] - floor:+.4f} | {_interval(row['diff_vs_random'])} | "
            f"{_interval(row['diff_vs_equal_compute'])} | {rho} | {gini} |" if floor is not None else
            f"| {row['dataset']} | {row['method']} | {row['rate']} | {row['achieved_rate']:.3f} | {row['n']} | "
            f"{row['mean']:.4f} | | | | {rho} | {gini} |")
    if summary["emp_default"]:
        d = summary["emp_default"]
        lines += ["", f"EMP default by the rule: `{d['ablation']}` (memory {d['memory']}, beta {d['beta']:g}, "
                      f"selector {d['selector']}; mean top-1 at 0.7 {d['mean_top1_at_0.7']:.4f}, "
                      f"memory ρ {d['memory_spearman']:.3f})."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    datasets = sorted({row["dataset"] for row in summary["rows"]})
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    shown = ("random", "rs2", "full_equal_compute", "infobatch", "ucb", "eps_greedy", "emp", "infobatch_published")
    for ax, dataset in zip(axes[0], datasets):
        rows = [r for r in summary["rows"] if r["dataset"] == dataset]
        full = [r for r in rows if r["method"] == "full"]
        if full:
            ax.axhline(full[0]["mean"], color="black", linestyle="--", label="full data")
        if dataset in summary["floor"]:
            ax.axhline(summary["floor"][dataset]["mean"], color="red", linestyle=":", label="random-init floor")
        for method in shown:
            points = sorted((r["achieved_rate"], r["mean"], r["std"]) for r in rows if r["method"] == method)
            if points:
                xs, ys, errs = zip(*points)
                style = {"linestyle": "--"} if method == "full_equal_compute" else {}
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method, **style)
        ax.set_title(f"SimCLR on {dataset}")
        ax.set_xlabel("achieved pruning rate (fraction of the full run's sample-forwards skipped)")
        ax.set_ylabel("linear-probe top-1 (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rates", nargs="+", type=float, default=sorted(SEEDS, reverse=True))
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (a sitting)")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="digits, 2 seeds, rate 0.7, no ablation: a smoke run")
    args = parser.parse_args(argv)
    seeds_at = dict(SEEDS)
    if args.quick:
        args.datasets, args.rates, seeds_at = ["digits"], [MAIN_RATE], {MAIN_RATE: 2}
    out_dir = Path(args.out) / "quick" if args.quick else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "pruning_quality.jsonl"
    records = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.is_file() else []
    banks: dict = {}

    def bank(dataset):
        if dataset not in banks:
            spec = DATASETS[dataset]
            cfg = load_pretrain_config(ROOT / spec["recipe"], [*spec["overrides"], f"data.root={DATA_ROOT}"])
            banks[dataset] = load_bank(cfg.data.name, cfg.data.root, "train", cfg.data.image_size, cfg.data.subset)
        return banks[dataset]

    def save(record):
        records.append(record)
        with open(results_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    done_runs = 0
    with tempfile.TemporaryDirectory() as workdir:
        for dataset in args.datasets:
            for seed in range(FLOOR_SEEDS if not args.quick else 2):
                if not any(r["method"] == "floor" and r["dataset"] == dataset and r["seed"] == seed for r in records):
                    save(floor_record(dataset, seed, workdir, args.probe_epochs, bank(dataset)))
                    print(f"floor {dataset} seed {seed}: top-1 {records[-1]['top1']:.4f}", flush=True)
        while not args.summarise_only and (args.max_runs is None or done_runs < args.max_runs):
            done = {(r["dataset"], r["method"], r["requested_rate"], r["seed"]) for r in records}
            todo = [r for r in planned_runs(args.datasets, records, args.rates, seeds_at, args.quick)
                    if r[:4] not in done]
            if not todo:
                break
            dataset, method, rate, seed, overrides = todo[0]
            same = [r for r in records if r["dataset"] == dataset and r["requested_rate"] == rate
                    and r["seed"] == seed and sorted(r.get("overrides", [])) == sorted(overrides)]
            if same:  # an identical configuration already ran under another name (emp = its chosen ablation)
                record = {**same[0], "method": method}
            else:
                record = run_one(dataset, method, rate, seed, overrides, bank(dataset), workdir, args.probe_epochs)
                done_runs += 1
            save(record)
            print(f"[{len(todo)} left] {dataset:13s} {method:26s} rate {rate} seed {seed}: achieved "
                  f"{record['achieved_rate']:.3f}  top-1 {record['top1']:.4f}  {record['train_seconds']:.1f} s",
                  flush=True)
    summary = summarise(records, out_dir, args.datasets)
    print((out_dir / "pruning_quality.md").read_text())
    print(f"wrote {out_dir / 'pruning_quality_summary.json'}, .md and .png ({len(summary['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
