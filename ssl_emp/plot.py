"""A run at a glance, without W&B: ``python -m ssl_emp.plot RUN [RUN ...] [--output plot.png]``.

Three panels from each run's ``metrics.jsonl``: the epoch loss and the online kNN top-1 against sample-forwards
(compute spent, so pruned and full-data runs compare per unit of compute), and how often each sample was trained:
the share of samples trained in at most a given share of the epochs, so a full-data run (a step at 1) and pruned
runs at any rate and length read on one axis. Several runs share the panels, one colour each, each labelled with
its selector and achieved rate (from the run's ``config.yaml``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

FORWARDS = "pruning/sample_forwards"


class PlotError(ValueError):
    """A run folder with nothing to plot."""


def epoch_records(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run, one per epoch. A resumed run drops what its stopped attempt logged past the
    checkpoint; a run resumed before that was so, or a file written by hand, may repeat an epoch, and the later
    record of an epoch is the one the run continued from."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"No metrics.jsonl in '{run_dir}'; pass a run directory (runs/NAME).")
    by_epoch: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict) and "epoch" in record and FORWARDS in record:
            by_epoch[record["epoch"]] = record
    if not by_epoch:
        raise PlotError(f"'{path}' has no epoch records yet (the run has not finished an epoch).")
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_label(run_dir: Path, records: list[dict]) -> str:
    """``NAME: SELECTOR, rate R`` (achieved), or ``NAME: all data``, from the run's config.yaml and last record."""
    import yaml

    config = Path(run_dir) / "config.yaml"
    pruning = (yaml.safe_load(config.read_text()) or {}).get("pruning", {}) if config.is_file() else {}
    rate = records[-1].get("pruning/achieved_rate", 0.0)
    if not rate or pruning.get("selector", "full") == "full":
        return f"{Path(run_dir).name}: all data"
    return f"{Path(run_dir).name}: {pruning['selector']}, rate {rate:.2f}"


def visit_shares(histogram: list[int], epochs: int) -> tuple[list[float], list[float]]:
    """The cumulative visit distribution on a common axis: x, the share of the ``epochs`` a sample was trained in
    (``k / epochs``); y, the share of samples trained in at most that share."""
    total = sum(histogram)
    if not total or epochs <= 0:
        return [], []
    shares = [k / epochs for k in range(len(histogram))]
    return [0.0, *shares], [0.0, *(c / total for c in itertools.accumulate(histogram))]


def plot_runs(run_dirs: Sequence[Path], output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (a cluster node, CI)
    import matplotlib.pyplot as plt

    runs = {Path(r): epoch_records(Path(r)) for r in run_dirs}
    fig, (loss_ax, knn_ax, visits_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    has_knn = False
    for run_dir, records in runs.items():
        label = run_label(run_dir, records)
        forwards = [r[FORWARDS] for r in records]
        (line,) = loss_ax.plot(forwards, [r.get("train/epoch_loss") for r in records], marker=".", label=label)
        knn = [(r[FORWARDS], r["monitor/knn_top1"]) for r in records if "monitor/knn_top1" in r]
        if knn:
            has_knn = True
            knn_ax.plot(*zip(*knn), marker="o", label=label, color=line.get_color())
        epochs = records[-1]["epoch"]
        x, y = visit_shares(records[-1].get("pruning/visit_histogram") or [], epochs)
        if x:
            visits_ax.step(x, y, where="post", label=f"{label} ({epochs} epochs)", color=line.get_color())
            mean = 1.0 - records[-1].get("pruning/achieved_rate", 0.0)  # the mean share, whatever the selector
            visits_ax.axvline(mean, color=line.get_color(), linestyle=":", linewidth=1)
    loss_ax.set(title="training loss", xlabel="sample-forwards", ylabel="epoch loss")
    knn_ax.set(title="online kNN top-1", xlabel="sample-forwards", ylabel="top-1")
    if not has_knn:
        knn_ax.text(
            0.5, 0.5, "no kNN records\n(set monitor.every=N)", ha="center", va="center", transform=knn_ax.transAxes
        )
    visits_ax.set(
        title="how often each sample was trained (dotted: 1 - rate)",
        xlabel="share of the epochs a sample was trained in",
        ylabel="share of samples (at most that)",
        xlim=(-0.02, 1.02),
        ylim=(0, 1.02),
    )
    for ax in (loss_ax, knn_ax, visits_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_emp.plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each with its metrics.jsonl)")
    parser.add_argument("--output", help="PNG to write (default: the first run's plot.png)")
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else Path(args.runs[0]) / "plot.png"
    try:
        written = plot_runs([Path(r) for r in args.runs], output)
    except PlotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"plot: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
