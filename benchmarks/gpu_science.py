"""The GPU experiment the CPU benchmark points to: where models are data-hungry rather than compute-bound, does a
choice of samples pay? ResNet-18 (CIFAR stem) SimCLR at 32 px, rate 0.7, one seed, in about 10 minutes of one
H100/H200:

    bash benchmarks/gpu_science.sh                 # or: make gpu-science (after make gpu-check)
    bash benchmarks/gpu_science.sh --tiny          # CPU-sized; the tests run it so the script cannot rot

Data: CIFAR-100 where its files are carried (``data/cifar-100-python``, torchvision's layout), else the largest
real data here, Fashion-MNIST's 60,000 training images at 32 px (said in every record). Runs, in this order (the
gate first, so a cut-short run still answers it): ``random``, the ``oracle`` (class-balanced target rates: on
curated, balanced data it can only even out the classes, so a gain here would say the choice itself pays),
``full_equal_compute`` (all the data, stopped at the pruned runs' sample-forwards), the EMP default, and
``coverage``. Each is pretrained, then probed by a linear classifier on the frozen features of the whole training
split, read on the test split. Records (``gpu_science.jsonl`` in ``--results``) carry the commit, the device, torch
and CUDA, the data, and each run's compute, including the embedding forwards ``coverage`` spends. One seed: a
first look, not a comparison with intervals; the next step is as many seeds as its differences need.

A run that would end past ``--minutes`` is not started (its time estimated from the slowest run so far); records
of finished runs are kept and the command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import pruning_quality as pq
from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.data import ImageBank, load_bank
from ssl_emp.evaluation.features import extract_features
from ssl_emp.evaluation.linear_classifier import train_linear_classifier
from ssl_emp.evaluation.pretrained import load_pretrained
from ssl_emp.pruning import achieved_rate

ROOT = Path(__file__).resolve().parent.parent
RECIPE, TINY_RECIPE = ROOT / "configs" / "simclr_cifar10_resnet18.yaml", ROOT / "configs" / "default.yaml"
RATE = 0.7
METHODS = {  # the gate first: random and the oracle
    "random": ["pruning.selector=random"],
    "oracle": pq.ORACLE,
    "full_equal_compute": None,  # all the data, stopped at random's planned sample-forwards
    "emp": ["pruning.scorer=emp", "pruning.selector=eps_greedy"],
    "coverage": ["pruning.selector=coverage"],  # whatever the default is: v4 sets it from its result
}
GPU = [
    "data.image_size=32",
    "model.backbone=resnet18",
    "model.cifar_stem=true",
    "train.batch_size=512",
    "optim.warmup_epochs=2",
    "train.amp=true",
    "train.channels_last=true",
]
TINY = [
    "model.width=8",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "train.batch_size=128",
    "train.device=cpu",
]


def data_source(tiny: bool, data_root: Path) -> tuple[str, ImageBank, ImageBank]:
    """(name, train, test): digits for --tiny; CIFAR-100 where carried; else Fashion-MNIST at 32 px."""
    if tiny:
        return "digits", load_bank("digits", None, "train"), load_bank("digits", None, "test")
    if (data_root / "cifar-100-python" / "train").is_file():
        return "cifar100", load_bank("cifar100", str(data_root), "train"), load_bank("cifar100", str(data_root), "test")
    return (
        "fashion-mnist",
        load_bank("fashion-mnist", str(data_root), "train", 32),
        load_bank("fashion-mnist", str(data_root), "test", 32),
    )


def environment(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **{k: v for k, v in pq.machine().items() if k != "torch"},
    }


def probe(checkpoint: Path, train: ImageBank, test: ImageBank, device: torch.device, epochs: int) -> dict:
    """Top-1 and balanced accuracy of a linear probe trained on the whole training split's frozen features."""
    pretrained = load_pretrained(str(checkpoint), device)
    train_x, train_y = extract_features(pretrained.backbone, pretrained.normalize, train, device, desc="train")
    test_x, test_y = extract_features(pretrained.backbone, pretrained.normalize, test, device, desc="test")
    classifier = train_linear_classifier(train_x, train_y, train.num_classes, epochs=epochs, seed=0)
    with torch.no_grad():
        measured = pq.accuracy(classifier(test_x), test_y, train.num_classes, [])
    return {k: v for k, v in measured.items() if k != "per_class"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: digits, a small CNN, 6 epochs")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (6 with --tiny)")
    parser.add_argument("--probe-epochs", type=int, default=None, help="default 30 (10 with --tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=10.0, help="start no run that would end after this")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args(argv)
    epochs = args.epochs or (6 if args.tiny else 30)
    probe_epochs = args.probe_epochs or (10 if args.tiny else 30)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        print("gpu_science: no CUDA device here; on a CPU run: bash benchmarks/gpu_science.sh --tiny", file=sys.stderr)
        return 1
    started = time.perf_counter()
    dataset, train, test = data_source(args.tiny, Path(args.data_root))
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "gpu_science.jsonl"
    commit = pq.current_commit()
    done = (
        {
            json.loads(line)["method"]
            for line in results.read_text().splitlines()
            if line.strip()
            and json.loads(line).get("commit") == commit
            and json.loads(line)["epochs"] == epochs
            and json.loads(line)["dataset"] == dataset
        }
        if results.is_file()
        else set()
    )
    where = environment(device)
    print(
        f"gpu_science: {dataset} ({len(train)} train, {len(test)} test images), {where['device']}, rate {RATE}, "
        f"{epochs} epochs, seed {args.seed}, commit {commit[:10]}" + (f"; done already: {sorted(done)}" if done else "")
    )
    labels = train.labels.cpu()
    pool = pq.RegimeData(train, train, train, test, [], None, None)
    slowest = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        for method in args.methods:
            if method in done:
                continue
            elapsed = (time.perf_counter() - started) / 60
            if slowest and elapsed + slowest / 60 > args.minutes:
                print(
                    f"gpu_science: {method} not started: {elapsed:.1f} min spent, a run takes about "
                    f"{slowest / 60:.1f} min, the budget is {args.minutes:g} (--minutes)"
                )
                continue
            overrides = (
                pq.equal_compute(len(train), epochs, RATE)
                if METHODS[method] is None
                else [*pq.with_oracle_file(METHODS[method], pool, workdir, dataset), f"pruning.rate={RATE}"]
            )
            pruned = [] if METHODS[method] is None else pq.FAIR  # the same warm-up, no anneal: selection alone
            cfg = load_pretrain_config(
                TINY_RECIPE if args.tiny else RECIPE,
                [
                    *pq.COMMON,
                    *pruned,
                    *(TINY if args.tiny else GPU),
                    f"data.name={dataset}",
                    f"data.root={args.data_root}",
                    f"train.epochs={epochs}",
                    *overrides,
                    f"train.seed={args.seed}",
                    f"run.out_dir={workdir}",
                    f"run.name={method}",
                ],
            )
            run_started = time.perf_counter()
            result = pretrain(cfg, recipe=method, show_progress=not args.tiny, train_bank=train)
            train_seconds = time.perf_counter() - run_started
            measured = probe(result.checkpoint, train, test, device, probe_epochs)
            slowest = max(slowest, time.perf_counter() - run_started)
            last = result.history[-1]
            record = {
                "method": method,
                "rate": RATE,
                "epochs": epochs,
                "seed": args.seed,
                "dataset": dataset,
                "commit": commit,
                **where,
                "overrides": overrides,
                "achieved_rate": achieved_rate(result.sample_forwards, epochs * len(train)),
                "sample_forwards": result.sample_forwards,
                "embedding_forwards": last.get("pruning/embedding_forwards", 0),
                "train_seconds": round(train_seconds, 1),
                "images_per_second": round(result.images_per_second),
                "final_loss": result.final_loss,
                "test": measured,
                "class_forward_spread": _class_spread(labels, result.checkpoint),
            }
            with open(results, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                f"gpu_science: {method:18s} top-1 {measured['top1']:.4f}  achieved rate {record['achieved_rate']:.3f}"
                f"  {train_seconds:.0f} s training, {record['images_per_second']} img/s",
                flush=True,
            )
    summary = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    summary = {
        r["method"]: r for r in summary if r["commit"] == commit and r["epochs"] == epochs and r["dataset"] == dataset
    }
    if "random" in summary:
        base = summary["random"]["test"]["top1"]
        for method, r in summary.items():
            print(f"  {method:18s} {r['test']['top1']:.4f}  ({r['test']['top1'] - base:+.4f} against random)")
    print(
        f"gpu_science: {len(summary)} of {len(METHODS)} runs recorded in {results} "
        f"({(time.perf_counter() - started) / 60:.1f} min)"
    )
    return 0 if len(summary) == len(args.methods) else 3


def _class_spread(labels: torch.Tensor, checkpoint: Path) -> float:
    """How unevenly the classes were trained on: the largest class's share of sample-forwards over the smallest's."""
    visits = torch.load(checkpoint, map_location="cpu", weights_only=False)["pruning"]["table"]["visits"].double()
    per_class = torch.zeros(int(labels.max()) + 1, dtype=torch.float64).index_add_(0, labels.clamp_min(0), visits)
    counts = torch.bincount(labels.clamp_min(0)).double()
    share = per_class / counts.clamp_min(1)
    return float(share.max() / share.min().clamp_min(1e-12))


if __name__ == "__main__":
    sys.exit(main())
