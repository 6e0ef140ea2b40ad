"""``python -m ssl_emp.pretrain [--config configs/NAME.yaml] [--data NAME_OR_FOLDER] key=value ...``"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Only the standard library up here: `--help` answers before torch (seconds to import) is loaded. The options it
# lists are a snapshot of describe_options() (ssl_emp/config/options.txt; a test keeps it current).
OPTIONS_HELP = Path(__file__).with_name("config") / "options.txt"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_emp.pretrain",
        description="Contrastive self-supervised pretraining. Options are set in a YAML recipe and/or as "
        "key=value overrides (values parsed as YAML).",
        epilog="options (key = what a plain run uses, from configs/default.yaml or the schema; where they differ, "
        "[what a run on --data FOLDER uses, from configs/folder.yaml] [what a --config recipe that leaves the key "
        "out uses, the schema's] [type]):\n"
        + OPTIONS_HELP.read_text().rstrip()
        + "\n\nexamples:\n  python -m ssl_emp.pretrain train.epochs=5 pruning.rate=0.5"
        "\n  python -m ssl_emp.pretrain --data path/to/images run.name=mine pruning.rate=0.5"
        "\n  python -m ssl_emp.pretrain --config configs/simclr_fashion_mnist.yaml data.root=data"
        "\n  python -m ssl_emp.pretrain --resume runs/default-20261124-101500"
        "\n  python -m ssl_emp.pretrain --resume auto run.name=mine ...   # a job that may be requeued",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="YAML recipe (see configs/; default: configs/default.yaml, SimCLR on the "
        "bundled digits); the defaults below apply to keys it leaves out",
    )
    parser.add_argument(
        "--data",
        metavar="NAME_OR_FOLDER",
        help="a dataset (digits, cifar10, ...) or a folder of images to pretrain on, as "
        "ssl_emp.train(data=...) takes it; a folder is read at its images' size unless "
        "data.image_size is given",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR|auto",
        help="continue this run from its last checkpoint, with its saved config plus any overrides; "
        "auto: continue the run named by run.name if it has a checkpoint, else start it, with "
        "this command's settings (run.resume=auto), for jobs a cluster may requeue",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def describe_request(pruning) -> str:
    if pruning.infobatch_r is not None:
        return f"InfoBatch's published rule (r={pruning.infobatch_r:g}, no target rate)"
    return f"requested rate {pruning.rate:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:  # before training began (loading data, building the model): nothing to save
        print("\ninterrupted before training started; nothing was saved", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    # The settings are checked before torch loads (seconds), so a bad key or value fails at once.
    from ssl_emp.config import (
        ConfigError,
        data_overrides,
        describe_recipe,
        load_pretrain_config,
        load_run_config,
        recipe_for,
    )

    try:
        given = [*(data_overrides(args.data) if args.data else []), *args.overrides]
        if args.resume and args.resume != "auto":
            cfg = load_run_config(args.resume, given)
        else:
            cfg = load_pretrain_config(args.config, [*given, *(["run.resume=auto"] if args.resume else [])])
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from ssl_emp.build import UNREADABLE_LIST, pretrain
    from ssl_emp.checkpoint import CheckpointError
    from ssl_emp.data import DatasetNotFoundError, UnreadableImageError
    from ssl_emp.engine import PlanMismatchError, RunDirError, RunInterrupted

    try:
        if not (args.resume and args.resume != "auto"):
            if os.environ.get("RANK", "0") == "0":  # once, not per torchrun process
                if cfg.run.resume is True:  # run.resume=auto found the run: its own settings, not a recipe's
                    read = f"{Path(cfg.run.out_dir) / str(cfg.run.name) / 'config.yaml'} (the run's own)"
                else:
                    read = args.config or f"{recipe_for(given).name} (no --config given)"
                print(describe_recipe(cfg, read))
        recipe = Path(args.config).stem if args.config else recipe_for(given).stem
        result = pretrain(cfg, recipe=recipe)
    except (
        ConfigError,
        DatasetNotFoundError,
        CheckpointError,
        RunDirError,
        UnreadableImageError,
        ValueError,
        PlanMismatchError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as stopped:
        if stopped.is_main:
            print(stopped, file=sys.stderr)
        return stopped.exit_code
    if not result.is_main:
        return 0
    if result.already_finished:
        longer = (
            "a larger train.max_forwards"
            if cfg.train.max_forwards is not None and result.epochs_done < cfg.train.epochs
            else "a larger train.epochs and run.extend=true"
        )
        print(
            f"Already finished: {result.run_dir} ran {result.epochs_done} epochs ({result.global_step} steps, "
            f"final loss {result.final_loss:.4f}); nothing was trained. To train longer, resume with {longer}.\n"
            f"  checkpoint:    {result.checkpoint}\n"
            f"  next:          {next_step(result.run_dir, result.num_classes)}"
        )
        return 0
    print(
        f"\nDone: {result.epochs_done} epochs, {result.global_step} steps in {result.seconds:.1f} s "
        f"({result.images_per_second:.0f} images/s), final loss {result.final_loss:.4f}.\n"
        f"  pruning:       {describe_request(cfg.pruning)}, achieved {result.achieved_rate:.3f} "
        f"({result.sample_forwards} of {result.full_data_forwards} sample-forwards)\n"
        + (f"  budget:        {result.budget}\n" if result.budget else "")
        + (
            f"  unreadable:    {result.unreadable_files} image files left out, listed in "
            f"{result.run_dir / UNREADABLE_LIST}"
            + (
                f"; {result.unreadable_skips} planned sample-forwards skipped (not counted as pruning)"
                if result.unreadable_skips
                else ""
            )
            + "\n"
            if result.unreadable_files or result.unreadable_skips
            else ""
        )
        + f"  run directory: {result.run_dir}\n"
        f"  checkpoint:    {result.checkpoint}\n"
        f"  metrics:       {result.run_dir / 'metrics.jsonl'}\n"
        f"  next:          {next_step(result.run_dir, result.num_classes)}"
    )
    return 0


def next_step(run_dir: Path, num_classes: int) -> str:
    """What to run after pretraining: a probe on the pretraining data, or, where its images have no labels (an
    unlabelled folder: ``num_classes`` 0), a probe on a labelled dataset or an export; one command per line."""
    from ssl_emp import commands

    probe = commands.module("eval.linear_probe", "--checkpoint", run_dir)
    if num_classes > 0:
        return probe
    indent = " " * 17
    return (
        f"the pretraining images have no labels; probe on a labelled folder, or export the backbone:\n"
        f"{indent}{probe} --dataset imagefolder --data-root LABELLED_FOLDER\n"
        f"{indent}{commands.module('ssl_emp.export', '--checkpoint', run_dir, '--output', 'backbone.safetensors')}"
    )


if __name__ == "__main__":
    sys.exit(main())
