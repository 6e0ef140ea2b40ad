"""What every evaluation command shares: its common options, where its result goes, its W&B run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import yaml


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint .pt file")
    parser.add_argument(
        "--dataset",
        help="evaluate on this dataset instead of the pretraining one (transfer): "
        "digits, fashion-mnist, cifar10, cifar100, stl10, imagefolder; channels and image size are "
        "adapted to the backbone and the result says how",
    )
    parser.add_argument("--data-root", help="the dataset's root (default: the one stored in the checkpoint's config)")
    parser.add_argument("--train-subset", type=int, help="use only N labelled training images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-init", action="store_true", help="evaluate a randomly initialised backbone instead")
    parser.add_argument(
        "--compare-random",
        action="store_true",
        help="also evaluate a randomly initialised backbone of the same architecture, as a floor",
    )
    parser.add_argument(
        "--output",
        help="JSON file to write (default: RUN_DIR/eval/<command>.json; for an exported "
        "backbone, <its folder>/eval/<its file name>_<command>.json)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log the result to W&B")


def common_kwargs(args: argparse.Namespace) -> dict:
    """The common options as keyword arguments of every evaluation function."""
    return dict(
        data_root=args.data_root,
        device=args.device,
        train_subset=args.train_subset,
        seed=args.seed,
        dataset=args.dataset,
    )


def _run_tracker(run_dir: Path, job_type: str, config: Optional[dict] = None):
    """A tracker in the pretraining run's W&B project and group, so the dashboard shows the two together."""
    from ssl_emp.tracking import Tracker

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    tracking = cfg.get("tracking", {})
    return Tracker(
        run_dir / "eval",
        mode=tracking.get("wandb", "auto"),
        project=tracking.get("project", "ssl_emp"),
        entity=tracking.get("entity"),
        name=f"{run_dir.name}-{job_type}",
        config=config or {},
        job_type=job_type,
        group=run_dir.name,
        metrics_file=f"{job_type}.jsonl",
    )


def log_to_wandb(result: dict, run_dir: Path, job_type: str) -> None:
    """Log an evaluation's scalars beside the pretraining run."""
    tracker = _run_tracker(run_dir, job_type, config=result)
    scalars = {f"{job_type}/{k}": v for k, v in result.items() if isinstance(v, (int, float))}
    tracker.log(scalars)
    tracker.summary(scalars)
    tracker.finish()


def log_image_to_wandb(path: Path, run_dir: Path, job_type: str, key: str) -> None:
    """Send the picture at ``path`` beside the pretraining run."""
    tracker = _run_tracker(run_dir, job_type)
    tracker.log_image(key, path)
    tracker.finish()


def write_result(result: dict, args: argparse.Namespace, job_type: str) -> Path:
    """Write the JSON record beside what it evaluates (and to W&B unless --no-wandb); returns the file: a run's
    ``RUN_DIR/eval/<command>.json``, or for an exported backbone ``<its folder>/eval/<its file name>_<command>.json``
    (``backbone.safetensors`` and ``backbone.pt`` side by side keep their own records)."""
    checkpoint = Path(result["checkpoint"])
    from_run = checkpoint.parent.name == "checkpoints" and (checkpoint.parent.parent / "config.yaml").is_file()
    run_dir = checkpoint.parent.parent if from_run else checkpoint.parent
    suffix = (f"_{result['dataset']}" if result["dataset"] != result["pretrained_on"] else "") + (
        "_random_init" if args.random_init else ""
    )
    exported = checkpoint.name.replace(".", "_")
    name = f"{job_type}{suffix}.json" if from_run else f"{exported}_{job_type}{suffix}.json"
    output = Path(args.output) if args.output else run_dir / "eval" / name
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_wandb:
        log_to_wandb(result, run_dir, job_type)
    return output


def headline(command: str, result: dict) -> str:
    transfer = f", pretrained on {result['pretrained_on']}" if result["pretrained_on"] != result["dataset"] else ""
    line = f"{command} on {result['dataset']} ({result['backbone']}{transfer}): top-1 {result['top1']:.4f}"
    if "top5" in result:
        line += f", top-5 {result['top5']:.4f}"
    if "random_init_top1" in result:
        line += f"  |  random-init backbone: top-1 {result['random_init_top1']:.4f}"
        if result["top1"] <= result["random_init_top1"]:  # pretraining made the features worse for this task
            line += (
                "\n  warning: the pretrained backbone scores no better than the same network untrained: its "
                "features do not serve this data"
                + (f" (it was pretrained on {result['pretrained_on']})" if transfer else "")
                + "; the number says nothing in pretraining's favour"
            )
    return line


def result_header(checkpoint: str, pretrained, random_init: bool, dataset: str, adapted: dict) -> dict:
    """The fields every evaluation record starts with: what was evaluated, on which data, adapted how."""
    from ssl_emp.checkpoint import resolve_checkpoint_path

    header = {
        "checkpoint": str(resolve_checkpoint_path(checkpoint)),
        "backbone": "random-init" if random_init else f"pretrained (epoch {pretrained.epoch})",
        "dataset": dataset,
        "pretrained_on": pretrained.config["data"]["name"],
    }
    if adapted:
        header["adapted"] = adapted
    return header


def run_evaluation(
    evaluate: Callable[..., dict],
    args: argparse.Namespace,
    kwargs: dict,
    job_type: str,
    label: str,
    extra_line: Callable[[dict], str] = lambda result: "",
) -> int:
    """The CLI flow the three commands share: evaluate (and the random-init floor if asked), report bad input
    as one line, write and log the result, print the headline. Returns the exit status."""
    from ssl_emp.checkpoint import CheckpointError
    from ssl_emp.data import DatasetNotFoundError

    try:
        result = evaluate(args.checkpoint, random_init=args.random_init, **kwargs)
        if args.compare_random and not args.random_init:
            result["random_init_top1"] = evaluate(args.checkpoint, random_init=True, **kwargs)["top1"]
    except (CheckpointError, DatasetNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # an evaluation keeps no state worth saving: one line, not a traceback
        print(f"\n{label}: interrupted; nothing was written", file=sys.stderr)
        return 130
    output = write_result(result, args, job_type)
    print(headline(label, result) + extra_line(result) + f"\n  written to {output}")
    return 0
