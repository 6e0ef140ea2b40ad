"""Training speed, ours beside lightly's reference loop, and what pruning costs and saves:
``.venv/bin/python benchmarks/throughput.py``

Synthetic uint8 data in memory (nothing is downloaded), shaped like CIFAR (50,000 x 3 x 32 x 32) and like a
96 px ImageNet subset. For each method x backbone x data shape x precision variant it reports:

- samples/s over timed full-size steps, and model FLOP utilisation (model FLOPs per step counted by
  ``torch.utils.flop_counter`` on one forward+backward, over the device's peak; ``--peak-tflops`` or the
  table below);
- the split of a step into the trainer's phases (its ``torch.profiler.record_function`` ranges
  ``ssl_emp.views``, ``ssl_emp.forward_backward``, ``ssl_emp.optimizer``, ``ssl_emp.pruning_observe``), read
  from ``torch.profiler`` over separate steps, so profiling does not slow the samples/s figure: on CUDA the
  GPU time of each range's kernels, on the CPU its CPU time;
- the pruning engine's cost per step: ``Pruner.observe`` (EMP score, table update) timed alone on a real
  step's statistics, and its share of a step at the measured samples/s (target: at most 3%);
- a pruned epoch's time over a full one at keep 0.3 (EMP scores, InfoBatch selection; the plan is built
  inside the timed span; target: at most 0.40), and over a random subset of the pruned epoch's size with no
  selection (what building the plan adds), all on the same trainer after a warm-up epoch;
- peak GPU memory, and host syncs: on CUDA, a few steps of a pruned epoch (EMP scores, InfoBatch weights)
  run under ``torch.cuda.set_sync_debug_mode("error")``; 0, or the first synchronising call by file and line;
- lightly's reference loop in the same process on the same device: lightly's ``SimCLRTransform`` on a
  torchvision ``VisionDataset`` through a ``DataLoader`` with workers, the same backbone and optimizer,
  lightly's projection head (``SimCLRProjectionHead`` / ``MoCoProjectionHead`` with a momentum copy) and
  ``NTXentLoss`` (for MoCo with its memory bank as the queue, symmetric), the same batch and autocast; and our
  samples/s over its.

It also times the two data paths on the same image files: the in-memory uint8 bank against
``data.in_memory=false`` (JPEG files decoded by DataLoader workers), full epochs of SimCLR on each.

``--tiny`` is a CPU-sized run (small CNN, 32 px, a few hundred images); ``benchmarks/gpu_check.sh --tiny``
runs it in the tests. Results go to ``benchmarks/results/throughput_<device>.json`` and ``.md`` with the
command (``--results-dir`` or ``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from common import (
    PHASES,
    ROOT,
    device_name,
    median_seconds_per_call,
    phase_seconds,
    slug,
    sync,
    sync_debug_pass,
    synthetic_bank,
    timed,
    timed_epoch,
    train_steps,
)
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import VisionDataset

from ssl_emp.build import build_trainer
from ssl_emp.config import PretrainConfig, build_config, read_yaml
from ssl_emp.data.bank import ImageBank
from ssl_emp.device import autocast
from ssl_emp.engine.trainer import Pretrainer
from ssl_emp.pruning import EpochPlan

SHAPES = {"cifar": (50_000, 32), "imagenet96": (20_000, 96)}  # images, side
RECIPES = {"simclr": "configs/simclr_cifar10_resnet18.yaml", "moco": "configs/moco_cifar10_resnet18.yaml"}
# (amp, channels_last, compile): each switch added on top of the last, so each row's gain is that switch's.
VARIANTS = {
    "fp32": (False, False, False),
    "amp": (True, False, False),
    "amp+cl": (True, True, False),
    "amp+cl+compile": (True, True, True),
}
# Dense bf16 tensor-core peaks (vendor figures), for model FLOP utilisation.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
PHASE_LABELS = {
    "ssl_emp.views": "views",
    "ssl_emp.forward_backward": "fwd+bwd",
    "ssl_emp.optimizer": "optim",
    "ssl_emp.pruning_observe": "observe",
}
# The epochs a trainer's pruner plans: epoch 0 full (its warm-up), epoch 1 pruned, skipping 1 - keep.
FULL_EPOCH, PRUNED_EPOCH = 0, 1


@dataclass
class Setting:
    method: str
    backbone: str
    shape: str
    variant: str


def bench_config(method: str, backbone: str, side: int, args, workdir: str, overrides: list[str]) -> PretrainConfig:
    """The method's GPU recipe with this benchmark's backbone, batch and device, W&B and the monitor off."""
    recipe = read_yaml(ROOT / RECIPES[method])
    recipe["model"].pop("cifar_stem", None)  # a ResNet setting of the GPU recipes, set below where it applies
    size = [f"model.width={args.width}"] if backbone == "small_cnn" else [f"model.cifar_stem={side <= 32}"]
    return build_config(
        PretrainConfig,
        recipe,
        [
            f"model.backbone={backbone}",
            *size,
            f"train.batch_size={args.batch_size}",
            f"train.device={args.device}",
            "tracking.wandb=disabled",
            "monitor.every=0",
            f"run.out_dir={workdir}",
            *overrides,
        ],
    )


def pruning_overrides(keep: float) -> list[str]:
    """Two epochs, the first full and the second pruned to ``keep``: the run-level rate is half the epoch's."""
    return [
        "train.epochs=2",
        "pruning.scorer=emp",
        "pruning.selector=infobatch",
        f"pruning.rate={(1 - keep) / 2}",
        "pruning.warmup_epochs=1",
        "pruning.anneal=0",
    ]


def make_trainer(setting: Setting, bank: ImageBank, args, workdir: str) -> tuple[Pretrainer, PretrainConfig]:
    amp, channels_last, compile_ = VARIANTS[setting.variant]
    overrides = [
        f"train.amp={amp}",
        f"train.channels_last={channels_last}",
        f"train.compile={compile_}",
        *pruning_overrides(args.keep),
        "run.name=throughput",
        *args.set,
    ]
    if setting.method == "moco":
        overrides.append(f"method.queue_size={min(65536, len(bank))}")
    cfg = bench_config(setting.method, setting.backbone, bank.image_size, args, workdir, overrides)
    trainer = build_trainer(cfg, Path(workdir), train_bank=bank)
    trainer.parts.method.train()
    return trainer, cfg


def random_batches(trainer: Pretrainer, batch_size: int, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randperm(len(trainer.parts.source), generator=generator)[:batch_size].to(trainer.settings.device)
        for _ in range(count)
    ]


def samples_per_second(trainer: Pretrainer, batch_size: int, steps: int, repeats: int) -> list[float]:
    return [
        steps * batch_size / timed(lambda batches=batches: train_steps(trainer, batches), trainer.settings.device)
        for batches in (random_batches(trainer, batch_size, steps, seed=r) for r in range(repeats))
    ]


def step_split(trainer: Pretrainer, batch_size: int, steps: int) -> dict[str, dict[str, float]]:
    return phase_seconds(trainer, random_batches(trainer, batch_size, steps + 1, seed=99))


def observe_seconds(trainer: Pretrainer, batch_size: int, calls: int, repeats: int) -> float:
    """Seconds of one ``Pruner.observe`` (the engine's work per step) on a real step's statistics."""
    indices, images = next(trainer.parts.source.batches(random_batches(trainer, batch_size, 1, seed=11)))
    stats = trainer.train_step(indices, images, None, indices)
    return median_seconds_per_call(
        lambda: trainer.parts.pruner.observe(indices, stats, trainer.counts.epoch),
        trainer.settings.device,
        calls,
        repeats,
    )


def model_flops_per_step(trainer: Pretrainer, batch_size: int) -> int:
    """FLOPs of the model's forward and backward on one batch (augmentation excluded)."""
    indices = random_batches(trainer, batch_size, 1, seed=7)[0]
    view0, view1 = trainer.parts.views(
        trainer.parts.source.batch(indices.to(trainer.parts.source.device)).to(trainer.settings.device)
    )
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(trainer.settings.device, trainer.settings.amp):
            stats = trainer.parts.method(view0, view1)
        stats.training_loss().backward()
    trainer.parts.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def planned(trainer: Pretrainer, epoch: int) -> EpochPlan:
    trainer.counts.epoch = epoch
    return trainer.parts.pruner.plan(epoch)


def pruned_over_full(trainer: Pretrainer, repeats: int) -> dict:
    """A pruned epoch against a full one and against a random one of its size; medians of ``repeats`` rounds."""
    full, pruned, control, kept = [], [], [], 0
    for _ in range(repeats + 1):  # the first round is a warm-up (new batch shapes); it also fills the score table
        full.append(timed_epoch(trainer, lambda: planned(trainer, FULL_EPOCH))[0])
        seconds, kept = timed_epoch(trainer, lambda: planned(trainer, PRUNED_EPOCH))
        pruned.append(seconds)
        control.append(
            timed_epoch(trainer, lambda kept=kept: EpochPlan(torch.randperm(len(trainer.parts.source))[:kept]))[0]
        )
    full, pruned, control = full[1:], pruned[1:], control[1:]
    return {
        "pruned_over_full_epoch": statistics.median(p / f for p, f in zip(pruned, full)),
        "pruned_over_same_size_random_epoch": statistics.median(p / c for p, c in zip(pruned, control)),
        "full_epoch_seconds": statistics.median(full),
        "pruned_epoch_seconds": statistics.median(pruned),
        "same_size_random_epoch_seconds": statistics.median(control),
        "pruned_epoch_images": kept,
    }


def host_syncs(trainer: Pretrainer, batch_size: int, steps: int):
    """On CUDA: the first ``steps`` steps of a pruned epoch under sync debug mode "error" (0, or the first
    synchronising call). Building the plan (once per epoch, on the host) is outside the pass."""
    if trainer.settings.device.type != "cuda":
        return "skipped: no CUDA"
    plan = planned(trainer, PRUNED_EPOCH)
    batches = list(plan.indices[: steps * batch_size].to(trainer.settings.device).split(batch_size))
    sync(trainer.settings.device)
    return sync_debug_pass(lambda: train_steps(trainer, batches))


class ArrayImages(VisionDataset):
    """A torchvision dataset over HWC uint8 arrays, read as CIFAR10 and STL10 read theirs: PIL image, then
    the transform."""

    def __init__(self, images: np.ndarray, transform):
        super().__init__(root=None, transform=transform)
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), 0


def lightly_reference(method: str, trainer: Pretrainer, cfg: PretrainConfig, bank: ImageBank, args) -> list[float]:
    """lightly's reference loop on the same data, backbone, optimizer, batch and autocast; samples/s.

    SimCLR: backbone + ``SimCLRProjectionHead``, ``NTXentLoss``. MoCo (lightly's CIFAR-10 benchmark form):
    backbone + ``MoCoProjectionHead`` with a momentum copy updated by ``update_momentum``, the symmetric loss
    ``NTXentLoss`` with a memory bank the size of our queue."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import SimCLRTransform

    from ssl_emp.engine.optim import build_optimizer
    from ssl_emp.models import build_backbone

    device, memory_format, a, m, o = (
        trainer.settings.device,
        trainer.settings.memory_format,
        cfg.augment,
        cfg.model,
        cfg.optim,
    )
    transform = SimCLRTransform(
        input_size=bank.image_size,
        cj_prob=a.jitter_p,
        cj_strength=a.jitter_strength,
        min_scale=a.crop_scale_min,
        random_gray_scale=a.grayscale_p,
        hf_prob=a.hflip_p,
        gaussian_blur=a.blur_p if a.blur_p is not None else (0.5 if bank.image_size >= 64 else 0.0),
        normalize={"mean": trainer.settings.data_info["mean"], "std": trainer.settings.data_info["std"]},
    )
    dataset = ArrayImages(bank.images.cpu().permute(0, 2, 3, 1).contiguous().numpy(), transform)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone(m.backbone, bank.channels, m.cifar_stem, m.width)
    if method == "simclr":
        head = SimCLRProjectionHead(feature_dim, m.proj_hidden_dim, m.proj_output_dim)
        criterion = NTXentLoss(temperature=cfg.method.temperature)
    else:
        head = MoCoProjectionHead(feature_dim, m.proj_hidden_dim, m.proj_output_dim)
        criterion = NTXentLoss(
            temperature=cfg.method.temperature, memory_bank_size=(cfg.method.queue_size, m.proj_output_dim)
        )
    model = nn.Sequential(backbone, head).to(device, memory_format=memory_format)
    criterion = criterion.to(device)
    momentum_model = None
    if method == "moco":
        momentum_model = copy.deepcopy(model)
        deactivate_requires_grad(momentum_model)
    optimizer = build_optimizer(model, o.name, lr=0.01, momentum=o.momentum, weight_decay=o.weight_decay)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step() -> None:
        (x0, x1), _ = next(stream)
        x0 = x0.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        x1 = x1.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        if momentum_model is None:
            with autocast(device, trainer.settings.amp):
                loss = criterion(model(x0), model(x1))
        else:
            update_momentum(model, momentum_model, cfg.method.momentum)
            with autocast(device, trainer.settings.amp):
                q0, q1 = model(x0), model(x1)
                with torch.no_grad():
                    k0, k1 = momentum_model(x0), momentum_model(x1)
                loss = 0.5 * (criterion(q0, k1) + criterion(q1, k0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    return [
        args.steps * args.batch_size / timed(lambda: [step() for _ in range(args.steps)], device)
        for _ in range(args.repeats)
    ]


def measure(setting: Setting, bank: ImageBank, args) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        trainer, cfg = make_trainer(setting, bank, args, workdir)
        device, batch = trainer.settings.device, args.batch_size
        samples_per_second(trainer, batch, args.warmup, 1)  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rates = samples_per_second(trainer, batch, args.steps, args.repeats)
        rate = statistics.median(rates)
        step_seconds = batch / rate
        split = step_split(trainer, batch, max(2, args.steps))
        observe = observe_seconds(trainer, batch, args.observe_calls, args.repeats)
        flops = model_flops_per_step(trainer, batch)
        epochs = pruned_over_full(trainer, args.epoch_repeats)
        name = device_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        record = {
            **vars(setting),
            "device": name,
            "images": len(bank),
            "image_size": bank.image_size,
            "batch_size": batch,
            "samples_per_second": rate,
            "samples_per_second_runs": rates,
            "step_seconds": step_seconds,
            "epoch_seconds_at_this_rate": len(bank) / rate,
            "model_tflops_per_step": flops / 1e12,
            "achieved_tflops": flops / step_seconds / 1e12,
            "mfu": flops / step_seconds / (peak * 1e12) if peak else None,
            "peak_tflops": peak,
            # Per phase (record_function range), seconds per step: on CUDA the GPU time of its kernels.
            "step_split_seconds": split.get("device", split["host"]),
            "step_split_clock": "device" if "device" in split else "host",
            "step_split_host_seconds": split["host"],
            "observe_seconds": observe,
            "observe_share_of_step": observe / step_seconds,
            **epochs,
            "keep": args.keep,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "host_syncs": host_syncs(trainer, batch, args.sync_steps),
            "sync_check_steps": args.sync_steps,
        }
        if not args.no_lightly:
            lightly_rates = lightly_reference(setting.method, trainer, cfg, bank, args)
            record["lightly_samples_per_second"] = statistics.median(lightly_rates)
            record["over_lightly"] = rate / record["lightly_samples_per_second"]
        return record


def data_paths(args, workdir: str) -> dict:
    """Full-epoch samples/s of the in-memory bank and of streaming, on one folder of JPEG files."""
    count, side = SHAPES["cifar"]
    count = min(args.images or count, args.stream_images)
    bank = synthetic_bank(count, side, seed=1)
    root = Path(workdir) / "folder"
    for i in range(count):
        folder = root / "train" / str(int(bank.labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(bank.images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.jpg", quality=90)
    rates = {}
    for path, extra in (("in_memory", []), ("streamed", ["data.in_memory=false", f"data.workers={args.workers}"])):
        cfg = bench_config(
            "simclr",
            args.backbones[0],
            side,
            args,
            workdir,
            ["data.name=imagefolder", f"data.root={root}", f"data.image_size={side}", f"run.name={path}", *extra],
        )
        trainer = build_trainer(cfg, Path(workdir) / path)
        trainer.parts.method.train()
        full_plan = lambda trainer=trainer: trainer.parts.pruner.plan(0)  # noqa: E731
        timed_epoch(trainer, full_plan)  # warm-up
        rates[path] = count / statistics.median(timed_epoch(trainer, full_plan)[0] for _ in range(args.epoch_repeats))
    return {
        "images": count,
        "image_size": side,
        "backbone": args.backbones[0],
        "workers": args.workers,
        "in_memory_samples_per_second": rates["in_memory"],
        "streamed_samples_per_second": rates["streamed"],
        "streamed_over_in_memory": rates["streamed"] / rates["in_memory"],
    }


def markdown(records: list[dict], command: str, paths: Optional[dict] = None) -> str:
    clock = records[0]["step_split_clock"]
    lines = [
        f"# Throughput on {records[0]['device']}",
        "",
        f"Command: `{command}`",
        "",
        f"Step split: each phase's `record_function` range under `torch.profiler`, {clock} time per step. "
        "Observe: `Pruner.observe` timed alone, and its share of a step at the measured samples/s. Epochs: "
        f"pruned to keep {records[0]['keep']} (EMP, InfoBatch) over a full one, and over a random one of the "
        'same size. Host syncs: steps of a pruned epoch under `torch.cuda.set_sync_debug_mode("error")`.',
        "",
        "| method | backbone | data | variant | samples/s | x lightly | MFU | "
        + " / ".join(PHASE_LABELS.values())
        + f" (ms, {clock}) | observe (us, share) | pruned/full epoch | "
        "pruned/random same size | peak GiB | host syncs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        split = r["step_split_seconds"]
        parts = " / ".join(f"{1e3 * split.get(k, 0):.1f}" for k in PHASES)
        lines.append(
            f"| {r['method']} | {r['backbone']} | {r['shape']} {r['image_size']}px | {r['variant']} | "
            f"{r['samples_per_second']:.0f} | {'%.2f' % r['over_lightly'] if 'over_lightly' in r else ''} | "
            f"{'%.3f' % r['mfu'] if r['mfu'] is not None else 'n/a'} | {parts} | "
            f"{1e6 * r['observe_seconds']:.0f} ({100 * r['observe_share_of_step']:.2f}%) | "
            f"{r['pruned_over_full_epoch']:.3f} | {r['pruned_over_same_size_random_epoch']:.3f} | "
            f"{'%.1f' % r['peak_memory_gib'] if r['peak_memory_gib'] is not None else 'n/a'} | "
            f"{r['host_syncs']} |"
        )
    if paths:
        lines += [
            "",
            f"Data paths, SimCLR {paths['backbone']} on {paths['images']} JPEG files of "
            f"{paths['image_size']} px (full epochs, {paths['workers']} workers for streaming):",
            "",
            "| path | samples/s |",
            "|---|---|",
            f"| in memory (uint8 bank) | {paths['in_memory_samples_per_second']:.0f} |",
            f"| streamed (data.in_memory=false) | {paths['streamed_samples_per_second']:.0f} |",
            f"| streamed / in memory | {paths['streamed_over_in_memory']:.2f} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: small CNN, 32 px, few images and steps")
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco"], choices=list(RECIPES))
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--images", type=int, help="images per synthetic set (default: the real set's size)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat (and profiled steps)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-repeats", type=int, default=2, help="full/pruned/random epoch rounds timed")
    parser.add_argument("--keep", type=float, default=0.3, help="kept fraction of a pruned epoch")
    parser.add_argument("--observe-calls", type=int, default=50, help="Pruner.observe calls per timing")
    parser.add_argument("--sync-steps", type=int, default=5, help="pruned steps under sync debug mode (CUDA)")
    parser.add_argument("--width", type=int, default=16, help="small_cnn width (--tiny)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of lightly's loop and of streaming",
    )
    parser.add_argument("--no-lightly", action="store_true", help="skip lightly's reference loop")
    parser.add_argument("--stream-images", type=int, default=10_000, help="JPEG files for the data-path timing")
    parser.add_argument("--no-data-paths", action="store_true", help="skip the in-memory vs streamed timing")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: known GPUs' bf16 peak)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="extra config overrides")
    parser.add_argument(
        "--results-dir", default=str(ROOT / "benchmarks" / "results"), help="folder of throughput_<device>.json and .md"
    )
    parser.add_argument("--out", help="results stem (default <results-dir>/throughput_<device>)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbones, args.shapes, args.variants = ["small_cnn"], ["cifar"], ["fp32"]
        args.images = args.images or 512
        args.stream_images = min(args.stream_images, 1024)
        args.batch_size = min(args.batch_size, 128)
        args.device = "cpu" if args.device == "auto" else args.device
        args.epoch_repeats = min(args.epoch_repeats, 2)
        args.observe_calls = min(args.observe_calls, 20)
    command = "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])

    records = []
    for shape in args.shapes:
        count, side = SHAPES[shape]
        bank = synthetic_bank(args.images or count, side)
        for backbone in args.backbones:
            for method in args.methods:
                for variant in args.variants:
                    record = measure(Setting(method, backbone, shape, variant), bank, args)
                    records.append(record)
                    lightly = f", {record['over_lightly']:.2f}x lightly" if "over_lightly" in record else ""
                    print(
                        f"{method} {backbone} {shape} {variant}: {record['samples_per_second']:.0f} samples/s"
                        f"{lightly}; observe {1e6 * record['observe_seconds']:.0f} us = "
                        f"{100 * record['observe_share_of_step']:.2f}% of a step; pruned/full epoch "
                        f"{record['pruned_over_full_epoch']:.3f} (keep {args.keep}), pruned/random same size "
                        f"{record['pruned_over_same_size_random_epoch']:.3f}; host syncs {record['host_syncs']}",
                        flush=True,
                    )

    paths = None
    if not args.no_data_paths:
        with tempfile.TemporaryDirectory() as workdir:
            paths = data_paths(args, workdir)
        print(
            f"data paths: in memory {paths['in_memory_samples_per_second']:.0f} samples/s, streamed "
            f"{paths['streamed_samples_per_second']:.0f} samples/s ({paths['streamed_over_in_memory']:.2f}x)"
        )

    name = slug(records[0]["device"]) + ("-tiny" if args.tiny else "")
    stem = Path(args.out) if args.out else Path(args.results_dir) / f"throughput_{name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "records": records,
        "data_paths": paths,
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(records, command, paths))
    print(f"written to {stem.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
