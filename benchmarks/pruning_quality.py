"""Does EMP help? SimCLR with each pruning method at equal cost, on real data, several seeds.

    .venv/bin/python benchmarks/pruning_quality.py            # the full benchmark (digits + Fashion-MNIST)
    .venv/bin/python benchmarks/pruning_quality.py --quick    # a one-minute smoke run

Every run is a real pretraining run followed by a linear probe on held-out data. Results are appended
to ``results/pruning_quality.jsonl`` as they finish (a rerun skips runs already there), then summarised
in ``results/pruning_quality.md`` and ``results/pruning_quality.png`` (top-1 against the achieved rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eval.linear_probe import linear_probe  # noqa: E402
from ssl_emp.config import load_pretrain_config  # noqa: E402
from ssl_emp.data import load_bank  # noqa: E402
from ssl_emp.engine import pretrain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Each dataset: the recipe, overrides that size it for a 2-core CPU, and the probe's training subset.
DATASETS = {
    "digits": {"recipe": "configs/default.yaml", "overrides": ["train.epochs=60", "train.checkpoint_every=1000", "monitor.every=0"],
               "probe_subset": None},
    "fashion-mnist": {"recipe": "configs/simclr_fashion_mnist.yaml",
                      "overrides": ["data.subset=2000", "model.width=16", "train.epochs=12", "train.batch_size=250",
                                    "train.checkpoint_every=1000"],
                      "probe_subset": 10000},
}

# Each method is a scorer x selector pair; every pruned method runs at the same run-level rate.
METHODS = {
    "random": ["pruning.scorer=loss", "pruning.selector=random"],
    "infobatch": ["pruning.scorer=loss", "pruning.selector=infobatch"],
    "ucb_topk": ["pruning.scorer=ucb", "pruning.selector=topk"],
    "eps_greedy": ["pruning.scorer=loss", "pruning.selector=eps_greedy"],
    "emp": ["pruning.scorer=emp", "pruning.selector=infobatch"],  # EMP with its default memory form and beta
    # The memory form that was the default before the ablation below chose one.
    "emp_disagreement": ["pruning.scorer=emp", "pruning.selector=infobatch", "pruning.memory=disagreement"],
}
ABLATION_RATE = 0.7
ABLATIONS = {
    "emp_beta0": ["pruning.scorer=emp", "pruning.selector=infobatch", "pruning.beta=0"],
    **{f"emp_{form}": ["pruning.scorer=emp", "pruning.selector=infobatch", f"pruning.memory={form}"]
       for form in ("disagreement", "entropy", "forgetting", "agreement")},
    # Is InfoBatch's 1/(1-r) rescaling (10x at the matched budget's r = 0.9) what costs accuracy at 0.7?
    "infobatch_unweighted": ["pruning.scorer=loss", "pruning.selector=infobatch", "pruning.infobatch_rescale=false"],
    "emp_unweighted": ["pruning.scorer=emp", "pruning.selector=infobatch", "pruning.infobatch_rescale=false"],
}


def planned_runs(datasets, rates, seeds):
    """Every (dataset, method, rate, seed) once, with its overrides."""
    seen = set()
    for run in _all_runs(datasets, rates, seeds):
        if run[:4] not in seen:
            seen.add(run[:4])
            yield run


def _all_runs(datasets, rates, seeds):
    for dataset in datasets:
        for seed in seeds:
            yield dataset, "full", 0.0, seed, ["pruning.selector=full"]
            for rate in rates:
                for method, overrides in METHODS.items():
                    yield dataset, method, rate, seed, [*overrides, f"pruning.rate={rate}"]
            for method, overrides in ABLATIONS.items():
                yield dataset, method, ABLATION_RATE, seed, [*overrides, f"pruning.rate={ABLATION_RATE}"]


def run_one(dataset, method, rate, seed, overrides, bank, workdir, probe_epochs):
    spec = DATASETS[dataset]
    name = f"{dataset}-{method}-r{rate}-s{seed}"
    cfg = load_pretrain_config(ROOT / spec["recipe"], [
        *spec["overrides"], *overrides, f"train.seed={seed}", "tracking.wandb=disabled",
        f"run.out_dir={workdir}", f"run.name={name}", "data.root=" + str(ROOT / "data")])
    started = time.perf_counter()
    result = pretrain(cfg, recipe=name, show_progress=False, train_bank=bank)
    train_seconds = time.perf_counter() - started
    probe = linear_probe(str(result.run_dir), epochs=probe_epochs, data_root=str(ROOT / "data"),
                         train_subset=spec["probe_subset"], seed=0)
    last = result.history[-1]
    return {"dataset": dataset, "method": method, "requested_rate": rate, "seed": seed,
            "achieved_rate": result.achieved_rate, "sample_forwards": result.sample_forwards,
            "train_seconds": round(train_seconds, 2), "top1": probe["top1"], "final_loss": result.final_loss,
            "visits_gini": last.get("pruning/visits_gini"), "overrides": overrides}


def summarise(records, out_dir: Path) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], r["requested_rate"]), []).append(r)
    lines = ["| dataset | method | requested rate | achieved rate | top-1 mean | top-1 std | seeds | train s (median) | visits Gini |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, method, rate), runs in sorted(groups.items()):
        top1 = [r["top1"] for r in runs]
        lines.append(
            f"| {dataset} | {method} | {rate:.1f} | {statistics.mean(r['achieved_rate'] for r in runs):.3f} | "
            f"{statistics.mean(top1):.4f} | {statistics.stdev(top1) if len(top1) > 1 else 0:.4f} | {len(runs)} | "
            f"{statistics.median(r['train_seconds'] for r in runs):.1f} | "
            f"{statistics.mean(r['visits_gini'] or 0 for r in runs):.3f} |")
    (out_dir / "pruning_quality.md").write_text("\n".join(lines) + "\n")

    datasets = sorted({r["dataset"] for r in records})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        full = [r["top1"] for r in records if r["dataset"] == dataset and r["method"] == "full"]
        if full:
            ax.axhline(statistics.mean(full), color="black", linestyle="--", label="full data")
        for method in METHODS:
            points = sorted((rate, runs) for (d, m, rate), runs in groups.items() if d == dataset and m == method)
            if not points:
                continue
            xs = [statistics.mean(r["achieved_rate"] for r in runs) for _, runs in points]
            ys = [statistics.mean(r["top1"] for r in runs) for _, runs in points]
            errs = [statistics.stdev([r["top1"] for r in runs]) if len(runs) > 1 else 0 for _, runs in points]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
        ax.set_title(f"SimCLR on {dataset}: linear-probe top-1 vs achieved pruning rate")
        ax.set_xlabel("achieved pruning rate (fraction of sample-forwards skipped)")
        ax.set_ylabel("linear-probe top-1 (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "pruning_quality.png", dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="digits, one seed, rate 0.7 only: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.rates, args.seeds = ["digits"], [0.7], 1
    out_dir = Path(args.out) / "quick" if args.quick else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "pruning_quality.jsonl"
    records = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.is_file() else []
    done = {(r["dataset"], r["method"], r["requested_rate"], r["seed"]) for r in records}
    runs = [r for r in planned_runs(args.datasets, args.rates, range(args.seeds)) if r[:4] not in done]
    print(f"{len(runs)} runs to do ({len(done)} already in {results_file})", flush=True)
    banks = {}
    with tempfile.TemporaryDirectory() as workdir:
        for i, (dataset, method, rate, seed, overrides) in enumerate(runs, 1):
            if dataset not in banks:
                spec_cfg = load_pretrain_config(ROOT / DATASETS[dataset]["recipe"],
                                                [*DATASETS[dataset]["overrides"], "data.root=" + str(ROOT / "data")])
                banks[dataset] = load_bank(spec_cfg.data.name, spec_cfg.data.root, "train",
                                           spec_cfg.data.image_size, spec_cfg.data.subset)
            record = run_one(dataset, method, rate, seed, overrides, banks[dataset], workdir, args.probe_epochs)
            records.append(record)
            with open(results_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"[{i}/{len(runs)}] {dataset:13s} {method:17s} rate {rate:.1f} seed {seed}: "
                  f"achieved {record['achieved_rate']:.3f}  top-1 {record['top1']:.4f}  {record['train_seconds']:.1f} s",
                  flush=True)
    summarise(records, out_dir)
    print(f"wrote {out_dir / 'pruning_quality.md'} and {out_dir / 'pruning_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
