"""Training throughput, ours beside lightly's reference loop: ``.venv/bin/python benchmarks/throughput.py``

Synthetic uint8 data in memory (nothing is downloaded), shaped like CIFAR (50,000 x 3 x 32 x 32) and like a
96 px ImageNet subset. For each method x backbone x data shape x precision variant it reports:

- samples/s over timed full-size steps, and model FLOP utilisation (model FLOPs per step counted by
  ``torch.utils.flop_counter`` on one forward+backward, over the device's peak; ``--peak-tflops`` or the
  table below);
- the split of a step (gather + augmentation, forward + backward, optimizer, pruning observe), timed with
  a device sync at each phase boundary in separate steps, so the split does not slow the samples/s figure;
- a pruned epoch's time over a full one at keep 0.3 (EMP scores, InfoBatch selection), same trainer;
- peak GPU memory, and host syncs per step (on CUDA, steps under ``torch.cuda.set_sync_debug_mode``);
- for SimCLR, lightly's reference loop in the same process on the same device: lightly's ``SimCLRTransform``
  on a torchvision ``VisionDataset`` through a ``DataLoader`` with workers, the same backbone, lightly's
  ``SimCLRProjectionHead`` and ``NTXentLoss``, the same batch and autocast; and our samples/s over its.

It also times the two data paths on the same image files: the in-memory uint8 bank against
``data.in_memory=false`` (JPEG files decoded by DataLoader workers), full epochs of SimCLR on each.

``--tiny`` is a CPU-sized run (small CNN, 32 px, a few hundred images) that the tests execute.
Results go to ``benchmarks/results/throughput_<device>.json`` and ``.md`` with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import VisionDataset

from ssl_emp.config import PretrainConfig, build_config, read_yaml
from ssl_emp.data.bank import ImageBank
from ssl_emp.engine.trainer import Pretrainer
from ssl_emp.pruning import EpochPlan

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The same epoch timing as the pruning speed benchmark.
from pruning_speed import sync, timed_epoch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"cifar": (50_000, 32), "imagenet96": (20_000, 96)}  # images, side
RECIPES = {"simclr": "configs/simclr_cifar10_resnet18.yaml", "moco": "configs/moco_cifar10_resnet18.yaml"}
# (amp, channels_last, compile): each switch added on top of the last, so each row's gain is that switch's.
VARIANTS = {"fp32": (False, False, False), "amp": (True, False, False), "amp+cl": (True, True, False),
            "amp+cl+compile": (True, True, True)}
# Dense bf16 tensor-core peaks (vendor figures), for model FLOP utilisation.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


@dataclass
class Setting:
    method: str
    backbone: str
    shape: str
    variant: str


def synthetic_bank(images: int, side: int, seed: int = 0) -> ImageBank:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (images, 3, side, side), dtype=torch.uint8, generator=generator)
    return ImageBank(data, torch.randint(0, 10, (images,), generator=generator), 10, f"synthetic{side}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def bench_config(method: str, backbone: str, side: int, args, workdir: str, overrides: list[str]) -> PretrainConfig:
    """The method's GPU recipe with this benchmark's backbone, batch and device, W&B and the monitor off."""
    recipe = read_yaml(ROOT / RECIPES[method])
    recipe["model"].pop("cifar_stem", None)  # a ResNet setting of the GPU recipes, set below where it applies
    size = [f"model.width={args.width}"] if backbone == "small_cnn" else [f"model.cifar_stem={side <= 32}"]
    return build_config(PretrainConfig, recipe, [
        f"model.backbone={backbone}", *size, f"train.batch_size={args.batch_size}", f"train.device={args.device}",
        "tracking.wandb=disabled", "monitor.every=0", f"run.out_dir={workdir}", *overrides])


def build_trainer(setting: Setting, bank: ImageBank, args, workdir: str) -> Pretrainer:
    amp, channels_last, compile_ = VARIANTS[setting.variant]
    overrides = [f"train.amp={amp}", f"train.channels_last={channels_last}", f"train.compile={compile_}",
                 "pruning.scorer=emp", "pruning.selector=infobatch", "pruning.rate=0.5", "run.name=throughput",
                 *args.set]
    if setting.method == "moco":
        overrides.append(f"method.queue_size={min(65536, len(bank))}")
    cfg = bench_config(setting.method, setting.backbone, bank.image_size, args, workdir, overrides)
    trainer = Pretrainer(cfg, Path(workdir), train_bank=bank)
    trainer.model.train()
    return trainer


def random_batches(trainer: Pretrainer, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(len(trainer.bank), generator=generator)[:trainer.cfg.train.batch_size].to(trainer.device)
            for _ in range(count)]


def samples_per_second(trainer: Pretrainer, steps: int, repeats: int) -> list[float]:
    rates = []
    for r in range(repeats):
        batches = random_batches(trainer, steps, seed=r)
        sync(trainer.device)
        start = time.perf_counter()
        for indices in batches:
            trainer.train_step(indices, lr=0.01)
        sync(trainer.device)
        rates.append(steps * trainer.cfg.train.batch_size / (time.perf_counter() - start))
    return rates


def step_split(trainer: Pretrainer, steps: int) -> dict[str, float]:
    """Median seconds of each phase of a step, with a device sync at every phase boundary."""
    laps: dict[str, list[float]] = {}
    clock = [0.0]

    def phase_done(name: str) -> None:
        sync(trainer.device)
        now = time.perf_counter()
        laps.setdefault(name, []).append(now - clock[0])
        clock[0] = now

    untimed, trainer.phase_done = trainer.phase_done, phase_done
    try:
        for indices in random_batches(trainer, steps, seed=99):
            sync(trainer.device)
            clock[0] = time.perf_counter()
            trainer.train_step(indices, lr=0.01)
    finally:
        trainer.phase_done = untimed
    return {name: statistics.median(values) for name, values in laps.items()}


def model_flops_per_step(trainer: Pretrainer) -> int:
    """FLOPs of the model's forward and backward on one batch (augmentation excluded)."""
    indices = random_batches(trainer, 1, seed=7)[0]
    view0, view1 = trainer.views(trainer.bank.batch(indices.to(trainer.bank.device)).to(trainer.device))
    counter = FlopCounterMode(display=False)
    with counter, trainer._autocast():
        trainer.model(view0, view1).per_sample_loss.mean().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def pruned_over_full(trainer: Pretrainer, keep: float, repeats: int) -> tuple[float, float, float]:
    """(median pruned/full epoch ratio, full epoch s, pruned epoch s); the plan is built inside the timed span."""
    full_plan = lambda: EpochPlan(torch.randperm(len(trainer.bank)))  # noqa: E731
    pruned_plan = lambda: trainer.pruner.selector.select(  # noqa: E731
        trainer.pruner.table.to_cpu(), 1.0 - keep, torch.Generator().manual_seed(0))
    timed_epoch(trainer, full_plan)  # fills the score table the selection reads
    full, pruned = [], []
    for _ in range(repeats):
        full.append(timed_epoch(trainer, full_plan)[0])
        pruned.append(timed_epoch(trainer, pruned_plan)[0])
    return statistics.median(p / f for p, f in zip(pruned, full)), statistics.median(full), statistics.median(pruned)


def host_syncs_per_step(trainer: Pretrainer, steps: int = 3) -> object:
    """On CUDA: 0 if ``steps`` training steps (engine observing) run under sync debug mode "error"."""
    if trainer.device.type != "cuda":
        return "n/a on cpu"
    batches = random_batches(trainer, steps, seed=5)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for indices in batches:
            trainer.train_step(indices, lr=0.01)
        return 0
    except RuntimeError as exc:
        return f">= 1 ({str(exc).splitlines()[0][:200]})"
    finally:
        torch.cuda.set_sync_debug_mode("default")


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


def lightly_reference(trainer: Pretrainer, args, steps: int, repeats: int) -> list[float]:
    """lightly's SimCLR reference loop on the same data, backbone, head, batch and autocast; samples/s."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    from ssl_emp.models import build_backbone

    cfg, bank, device = trainer.cfg, trainer.bank, trainer.device
    a = cfg.augment
    transform = SimCLRTransform(
        input_size=bank.image_size, cj_prob=a.jitter_p, cj_strength=a.jitter_strength, min_scale=a.crop_scale_min,
        random_gray_scale=a.grayscale_p, hf_prob=a.hflip_p,
        gaussian_blur=a.blur_p if a.blur_p is not None else (0.5 if bank.image_size >= 64 else 0.0),
        normalize={"mean": trainer.mean, "std": trainer.std})
    dataset = ArrayImages(bank.images.cpu().permute(0, 2, 3, 1).contiguous().numpy(), transform)
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone(cfg.model.backbone, bank.channels, cfg.model.cifar_stem, cfg.model.width)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(feature_dim, cfg.model.proj_hidden_dim,
                                                               cfg.model.proj_output_dim)).to(device)
    model = model.to(memory_format=trainer.memory_format)
    criterion = NTXentLoss(temperature=cfg.method.temperature)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step() -> None:
        (x0, x1), _ = next(stream)
        x0 = x0.to(device, non_blocking=True).contiguous(memory_format=trainer.memory_format)
        x1 = x1.to(device, non_blocking=True).contiguous(memory_format=trainer.memory_format)
        with trainer._autocast():
            loss = criterion(model(x0), model(x1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        rates.append(steps * cfg.train.batch_size / (time.perf_counter() - start))
    return rates


def measure(setting: Setting, bank: ImageBank, args) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(setting, bank, args, workdir)
        device = trainer.device
        samples_per_second(trainer, args.warmup, 1)  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rates = samples_per_second(trainer, args.steps, args.repeats)
        rate = statistics.median(rates)
        split = step_split(trainer, args.steps)
        flops = model_flops_per_step(trainer)
        ratio, full_s, pruned_s = pruned_over_full(trainer, args.keep, args.epoch_repeats)
        name = device_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        step_seconds = args.batch_size / rate
        record = {
            **vars(setting), "device": name, "images": len(bank), "image_size": bank.image_size,
            "batch_size": args.batch_size, "samples_per_second": rate, "samples_per_second_runs": rates,
            "epoch_seconds_at_this_rate": len(bank) / rate,
            "model_tflops_per_step": flops / 1e12, "achieved_tflops": flops / step_seconds / 1e12,
            "mfu": flops / step_seconds / (peak * 1e12) if peak else None, "peak_tflops": peak,
            "step_split_seconds": split,
            "observe_share_of_step": split.get("pruning observe", 0.0) / sum(split.values()),
            "pruned_over_full_epoch": ratio, "full_epoch_seconds": full_s, "pruned_epoch_seconds": pruned_s,
            "keep": args.keep,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "host_syncs_per_step": host_syncs_per_step(trainer),
        }
        if setting.method == "simclr" and not args.no_lightly:
            lightly_rates = lightly_reference(trainer, args, args.steps, args.repeats)
            record["lightly_samples_per_second"] = statistics.median(lightly_rates)
            record["over_lightly"] = rate / record["lightly_samples_per_second"]
        return record


def data_paths(args, workdir: str) -> dict:
    """Full-epoch samples/s of the in-memory bank and of streaming, on one folder of JPEG files."""
    from PIL import Image

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
        cfg = bench_config("simclr", args.backbones[0], side, args, workdir, [
            "data.name=imagefolder", f"data.root={root}", f"data.image_size={side}", f"run.name={path}", *extra])
        trainer = Pretrainer(cfg, Path(workdir) / path)
        trainer.model.train()
        full_plan = lambda: trainer.pruner.plan(0)  # noqa: E731
        timed_epoch(trainer, full_plan)  # warm-up
        rates[path] = count / statistics.median(timed_epoch(trainer, full_plan)[0] for _ in range(args.epoch_repeats))
    return {"images": count, "image_size": side, "backbone": args.backbones[0], "workers": args.workers,
            "in_memory_samples_per_second": rates["in_memory"], "streamed_samples_per_second": rates["streamed"],
            "streamed_over_in_memory": rates["streamed"] / rates["in_memory"]}


def markdown(records: list[dict], command: str, paths: Optional[dict] = None) -> str:
    lines = [f"# Throughput on {records[0]['device']}", "", f"Command: `{command}`", "",
             "| method | backbone | data | variant | samples/s | x lightly | MFU | augment / fwd+bwd / optim / "
             "observe (ms) | observe share | pruned/full epoch (keep 0.3) | peak GiB | host syncs/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        split = r["step_split_seconds"]
        parts = " / ".join(f"{1e3 * split.get(k, 0):.1f}" for k in
                           ("gather+augment", "forward+backward", "optimizer", "pruning observe"))
        lines.append(
            f"| {r['method']} | {r['backbone']} | {r['shape']} {r['image_size']}px | {r['variant']} | "
            f"{r['samples_per_second']:.0f} | {'%.2f' % r['over_lightly'] if 'over_lightly' in r else ''} | "
            f"{'%.3f' % r['mfu'] if r['mfu'] is not None else 'n/a'} | {parts} | "
            f"{100 * r['observe_share_of_step']:.2f}% | {r['pruned_over_full_epoch']:.3f} | "
            f"{'%.1f' % r['peak_memory_gib'] if r['peak_memory_gib'] is not None else 'n/a'} | "
            f"{r['host_syncs_per_step']} |")
    if paths:
        lines += ["", f"Data paths, SimCLR {paths['backbone']} on {paths['images']} JPEG files of "
                      f"{paths['image_size']} px (full epochs, {paths['workers']} workers for streaming):", "",
                  "| path | samples/s |", "|---|---|",
                  f"| in memory (uint8 bank) | {paths['in_memory_samples_per_second']:.0f} |",
                  f"| streamed (data.in_memory=false) | {paths['streamed_samples_per_second']:.0f} |",
                  f"| streamed / in memory | {paths['streamed_over_in_memory']:.2f} |"]
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
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-repeats", type=int, default=2, help="full/pruned epoch pairs timed")
    parser.add_argument("--keep", type=float, default=0.3)
    parser.add_argument("--width", type=int, default=16, help="small_cnn width (--tiny)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of lightly's loop")
    parser.add_argument("--no-lightly", action="store_true", help="skip lightly's reference loop")
    parser.add_argument("--stream-images", type=int, default=10_000, help="JPEG files for the data-path timing")
    parser.add_argument("--no-data-paths", action="store_true", help="skip the in-memory vs streamed timing")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: known GPUs' bf16 peak)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="extra config overrides")
    parser.add_argument("--out", help="results stem (default benchmarks/results/throughput_<device>)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbones, args.shapes, args.variants = ["small_cnn"], ["cifar"], ["fp32"]
        args.images = args.images or 512
        args.stream_images = min(args.stream_images, 1024)
        args.batch_size = min(args.batch_size, 128)
        args.device = "cpu" if args.device == "auto" else args.device
        args.epoch_repeats = min(args.epoch_repeats, 2)
    command = "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])

    records = []
    for shape in args.shapes:
        count, side = SHAPES[shape]
        bank = synthetic_bank(args.images or count, side)
        for backbone in args.backbones:
            for method in args.methods:
                for variant in args.variants:
                    setting = Setting(method, backbone, shape, variant)
                    record = measure(setting, bank, args)
                    records.append(record)
                    lightly = f", {record['over_lightly']:.2f}x lightly" if "over_lightly" in record else ""
                    print(f"{method} {backbone} {shape} {variant}: {record['samples_per_second']:.0f} samples/s"
                          f"{lightly}, pruned/full epoch {record['pruned_over_full_epoch']:.3f}, observe "
                          f"{100 * record['observe_share_of_step']:.2f}% of a step, host syncs/step "
                          f"{record['host_syncs_per_step']}", flush=True)

    paths = None
    if not args.no_data_paths:
        with tempfile.TemporaryDirectory() as workdir:
            paths = data_paths(args, workdir)
        print(f"data paths: in memory {paths['in_memory_samples_per_second']:.0f} samples/s, streamed "
              f"{paths['streamed_samples_per_second']:.0f} samples/s ({paths['streamed_over_in_memory']:.2f}x)")

    slug = re.sub(r"[^a-z0-9]+", "-", records[0]["device"].lower()).strip("-") + ("-tiny" if args.tiny else "")
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"throughput_{slug}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "torch": torch.__version__, "threads": torch.get_num_threads(), "records": records,
            "data_paths": paths}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(records, command, paths))
    print(f"written to {stem.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
