"""What does pruning cost and save in time? ``.venv/bin/python benchmarks/pruning_speed.py``

Three measurements, each inside one process after warm-up, so that a shared, noisy machine affects
both sides of every ratio alike:

1. **Pruned vs full epoch.** The same trainer cycles through a full-data epoch, an epoch pruned at the
   per-epoch keep fraction 0.3 (EMP scores, InfoBatch selection; the plan is built inside the timed
   span), and a control: a random subset of the pruned epoch's size, with no scoring. Target: a pruned
   epoch takes at most 0.40 of a full one; pruned over control isolates what selection itself costs.
2. **Scoring overhead per step.** Blocks of training steps with the pruning engine observing each step
   (EMP score, table update) alternate with blocks where it does not. Target: at most 3% of step time.
3. **Host synchronisation.** On CUDA, the steps run under ``torch.cuda.set_sync_debug_mode("error")``
   with the engine observing: any device-to-host sync it added would raise. (On CPU there is no device
   to wait for; ``tests/test_pruning.py`` guards the same property by running the engine on the meta
   device, where any read of a tensor's values fails.)

Medians over repetitions; results go to ``results/pruning_speed.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ssl_emp.config import load_pretrain_config
from ssl_emp.engine.trainer import Pretrainer
from ssl_emp.pruning import EpochPlan

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "fashion-mnist": ("configs/simclr_fashion_mnist.yaml", ["data.subset=10000", "model.width=16"]),
    "digits": ("configs/default.yaml", []),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_epoch(trainer: Pretrainer, build_plan) -> tuple[float, int]:
    sync(trainer.device)
    start = time.perf_counter()
    plan = build_plan()
    trainer.train_epoch(plan)
    sync(trainer.device)
    return time.perf_counter() - start, len(plan)


def timed_steps(trainer: Pretrainer, steps: int, observe: bool) -> float:
    """Seconds per step over ``steps`` full-size steps; with ``observe=False`` the engine's hook is a no-op."""
    pruner_observe = trainer.pruner.observe
    if not observe:
        trainer.pruner.observe = lambda *args, **kwargs: None
    batch = trainer.cfg.train.batch_size
    generator = torch.Generator().manual_seed(steps)
    batches = [torch.randperm(len(trainer.bank), generator=generator)[:batch].to(trainer.device) for _ in range(steps)]
    try:
        sync(trainer.device)
        start = time.perf_counter()
        for indices in batches:
            trainer.train_step(indices, lr=0.01)
        sync(trainer.device)
        return (time.perf_counter() - start) / steps
    finally:
        trainer.pruner.observe = pruner_observe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist", choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=5, help="rounds of epochs, and step-block pairs")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--keep", type=float, default=0.3, help="kept fraction of a pruned epoch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_speed.json"))
    args = parser.parse_args(argv)

    recipe, overrides = SETTINGS[args.dataset]
    with tempfile.TemporaryDirectory() as workdir:
        cfg = load_pretrain_config(ROOT / recipe, [
            *overrides, "pruning.scorer=emp", "pruning.selector=infobatch", "pruning.rate=0.5",
            "train.epochs=100", "tracking.wandb=disabled", f"train.device={args.device}", "monitor.every=0",
            f"run.out_dir={workdir}", "run.name=speed", "data.root=" + str(ROOT / "data")])
        trainer = Pretrainer(cfg, Path(workdir))
        trainer.model.train()
        full_plan = lambda: EpochPlan(torch.randperm(len(trainer.bank)))  # noqa: E731
        pruned_plan = lambda: trainer.pruner.selector.select(  # noqa: E731
            trainer.pruner.table.to_cpu(), 1.0 - args.keep, torch.Generator().manual_seed(0))

        print(f"{args.dataset}: {len(trainer.bank)} images, batch {cfg.train.batch_size}, device {trainer.device}")
        timed_epoch(trainer, full_plan)  # warm-up; also fills the score table
        full_times, pruned_times, control_times, kept = [], [], [], 0
        for r in range(args.repeats):
            full_times.append(timed_epoch(trainer, full_plan)[0])
            seconds, kept = timed_epoch(trainer, pruned_plan)
            pruned_times.append(seconds)
            control_size = kept
            control_times.append(timed_epoch(trainer, lambda: EpochPlan(torch.randperm(len(trainer.bank))[:control_size]))[0])
            print(f"  round {r + 1}: full {full_times[-1]:.2f} s, pruned ({kept} images) {seconds:.2f} s, "
                  f"random {kept} without scoring {control_times[-1]:.2f} s")
        epoch_ratios = [p / f for p, f in zip(pruned_times, full_times)]
        control_ratios = [p / c for p, c in zip(pruned_times, control_times)]

        with_engine, without_engine = [], []
        for r in range(args.repeats):
            without_engine.append(timed_steps(trainer, args.steps, observe=False))
            with_engine.append(timed_steps(trainer, args.steps, observe=True))
        step_overheads = [w / wo - 1.0 for w, wo in zip(with_engine, without_engine)]

        # The block comparison above is as noisy as the machine; timing the engine's per-step work by itself
        # (the same observe() call on a real step's outputs) bounds its share far more tightly.
        indices = torch.randperm(len(trainer.bank))[:cfg.train.batch_size].to(trainer.device)
        output = trainer.train_step(indices, lr=0.01)
        observe_times = []
        for _ in range(args.repeats):
            sync(trainer.device)
            start = time.perf_counter()
            for _ in range(200):
                trainer.pruner.observe(indices, output, 1)
            sync(trainer.device)
            observe_times.append((time.perf_counter() - start) / 200)

        sync_check = "not applicable on cpu"
        if trainer.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
            try:
                timed_steps(trainer, 3, observe=True)
                sync_check = "passed: no device-to-host sync in train_step with the engine observing"
            except RuntimeError as exc:
                sync_check = f"FAILED: {exc}"
            finally:
                torch.cuda.set_sync_debug_mode("default")

    result = {
        "dataset": args.dataset, "images": len(trainer.bank), "batch_size": cfg.train.batch_size,
        "device": str(trainer.device), "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "keep_fraction": args.keep, "pruned_epoch_images": kept,
        "full_epoch_seconds_median": statistics.median(full_times),
        "pruned_epoch_seconds_median": statistics.median(pruned_times),
        "pruned_over_full_epoch_ratio_median": statistics.median(epoch_ratios),
        "pruned_over_full_epoch_ratios": [round(x, 4) for x in epoch_ratios],
        "same_size_random_epoch_seconds_median": statistics.median(control_times),
        "pruned_over_same_size_random_ratio_median": statistics.median(control_ratios),
        "step_seconds_without_engine_median": statistics.median(without_engine),
        "step_seconds_with_engine_median": statistics.median(with_engine),
        "engine_step_overhead_median": statistics.median(step_overheads),
        "engine_step_overheads": [round(x, 4) for x in step_overheads],
        "observe_seconds_median": statistics.median(observe_times),
        "observe_share_of_step_median": statistics.median(observe_times) / statistics.median(without_engine),
        "host_sync_check": sync_check,
        "command": "python benchmarks/pruning_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pruned/full epoch time: {result['pruned_over_full_epoch_ratio_median']:.3f} (target <= 0.40; "
          f"keep fraction {args.keep})")
    print(f"pruned/same-size random epoch time: {result['pruned_over_same_size_random_ratio_median']:.3f} "
          "(what building the plan adds)")
    print(f"engine overhead per step: {100 * result['engine_step_overhead_median']:+.2f}% in alternating blocks; "
          f"observe() alone {1e6 * result['observe_seconds_median']:.0f} us = "
          f"{100 * result['observe_share_of_step_median']:.2f}% of a step (target <= 3%)")
    print(f"host sync check: {sync_check}\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
