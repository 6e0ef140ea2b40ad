"""``python benchmarks/pruning_quality``: run the benchmark's sittings and summarise (see the package docstring)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a folder: make the package importable

import torch  # noqa: E402

import pruning_quality  # noqa: E402
from pruning_quality import protocol, report  # noqa: E402
from pruning_quality.regimes import ROOT, load_regime  # noqa: E402
from pruning_quality.runs import current_commit, floor_record, run_one  # noqa: E402
from pruning_quality.workers import key_of, merge_worker_files, work  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=pruning_quality.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (recorded; a rerun uses the same)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the plan (each with --threads threads): one per free core",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "v4"))
    parser.add_argument("--max-hours", type=float, default=None, help="stop starting runs after this long")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # set on the processes it starts
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = current_commit()
    if not args.summarise_only and commit.endswith("+dirty"):
        print(
            f"refusing to run: the checkout has uncommitted changes to code the runs depend on ({commit}); "
            "run from a clean worktree pinned at one commit",
            file=sys.stderr,
        )
        return 2
    deadline = None if args.max_hours is None else time.time() + args.max_hours * 3600
    cache = {}

    def data_for(regime):
        if regime not in cache:
            cache[regime] = load_regime(regime)
        return cache[regime]

    if not args.summarise_only and args.worker is None:
        protocol.check_warmup_share()
        protocol.check_batches_fit(data_for)
    with tempfile.TemporaryDirectory() as workdir:

        def plan(records):
            return protocol.planned_runs(records, data_for)

        def run(key, overrides):
            if key["stage"] == "floor":
                return floor_record(
                    key["regime"], key["seed"], data_for(key["regime"]), workdir, args.probe_epochs, commit
                )
            return run_one(key, overrides, data_for(key["regime"]), workdir, args.probe_epochs, commit)

        if args.worker is not None:
            work(args.worker, out_dir, plan, run, deadline)
            return 0
        records = merge_worker_files(out_dir)
        if not args.summarise_only and args.workers == 1:
            work(0, out_dir, plan, run, deadline)
        elif not args.summarise_only:
            passed = list(argv if argv is not None else sys.argv[1:])
            workers = [
                subprocess.Popen([sys.executable, str(Path(__file__).parent), *passed, "--worker", str(k)])
                for k in range(args.workers)
            ]
            for process in workers:
                process.wait()
        records = merge_worker_files(out_dir)
        done = {key_of(r) for r in records}
        remaining = sum(key_of(k) not in done for k, _ in plan(records))
    if not records:
        print("no records yet")
        return 0
    summary = report.summarise(records, out_dir, remaining)
    print(f"{len(records)} runs recorded, {remaining} planned runs left" + (" (complete)" if not remaining else ""))
    print((out_dir / "pruning_quality.md").read_text())
    print(f"recommended: {summary['recommended']}; wrote {out_dir / 'pruning_quality_summary.json'}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
