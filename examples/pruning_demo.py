"""What pruning buys, in one command (``make demo``): the embedded default recipe pretrained twice on digits,
on all the data and with the recommended pruning setting at rate 0.7, then each backbone probed beside the
random-init floor (the same probe on an untrained backbone).

    .venv/bin/python examples/pruning_demo.py [--rate 0.7] [--out runs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.linear_probe import linear_probe
from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.pruning import SELECTORS

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0.7, help="fraction of sample-forwards to skip")
    parser.add_argument("--out", default="runs", help="parent folder of the two run directories")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (a quicker look)")
    args = parser.parse_args(argv)
    common = [f"run.out_dir={args.out}", "monitor.every=0"] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    runs = {}
    for label, overrides in (
        ("all data", ["run.name=demo-full"]),
        ("pruned", ["run.name=demo-pruned", f"pruning.rate={args.rate}"]),
    ):
        cfg = load_pretrain_config(RECIPE, [*common, *overrides])
        if label == "pruned":
            scored = SELECTORS[cfg.pruning.selector].uses_scores
            label = f"pruned ({cfg.pruning.selector}{f', scorer {cfg.pruning.scorer}' if scored else ''})"
        print(f"\n== pretraining: {label}", flush=True)
        result = pretrain(cfg, recipe="demo")
        runs[label] = (result, linear_probe(str(result.run_dir))["top1"])
    full, _ = runs["all data"]
    floor = linear_probe(str(full.run_dir), random_init=True)["top1"]

    print("\n| run | achieved rate | pretraining s | linear-probe top-1 | above the floor |")
    print("|---|---|---|---|---|")
    for label, (result, top1) in runs.items():
        print(f"| {label} | {result.achieved_rate:.3f} | {result.seconds:.1f} | {top1:.4f} | {top1 - floor:+.4f} |")
    print(f"| random-init floor | | | {floor:.4f} | |")
    ((pruned, pruned_top1),) = [v for k, v in runs.items() if k != "all data"]
    print(
        f"\nPruning at {args.rate} skipped {pruned.achieved_rate:.1%} of the sample-forwards and saved "
        f"{1 - pruned.seconds / full.seconds:.0%} of the pretraining time ({pruned.seconds:.1f} s against "
        f"{full.seconds:.1f} s); top-1 moved by {pruned_top1 - runs['all data'][1]:+.4f}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
