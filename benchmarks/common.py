"""What the benchmark scripts share: synthetic data, device names, timing and profiling helpers.

Scripts in this folder import it as ``import common``: Python puts a script's own folder first on
``sys.path`` when it runs ``python benchmarks/<script>.py``. Tests load it by file path (importlib) or run
the scripts as subprocesses.
"""

from __future__ import annotations

import re
import statistics
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Union

import torch
from torch.profiler import ProfilerActivity, profile

from ssl_emp.data.bank import ImageBank
from ssl_emp.pruning import EpochPlan

ROOT = Path(__file__).resolve().parent.parent
# The trainer's record_function ranges, one per phase of a step (ssl_emp/engine/trainer.py), in step order.
PHASES = ("ssl_emp.views", "ssl_emp.forward_backward", "ssl_emp.optimizer", "ssl_emp.pruning_observe")


def synthetic_bank(images: int, side: int, seed: int = 0, channels: int = 3, classes: int = 10) -> ImageBank:
    """Random uint8 images (nothing is downloaded) with random labels, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (images, channels, side, side), dtype=torch.uint8, generator=generator)
    return ImageBank(data, torch.randint(0, classes, (images,), generator=generator), classes, f"synthetic{side}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def slug(name: str) -> str:
    """A file-name-safe form of a device name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``run()``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def timed_epoch(trainer, build_plan: Callable[[], EpochPlan]) -> tuple[float, int]:
    """(seconds, samples) of one epoch: building its plan (inside the timed span) and training on it."""
    sync(trainer.settings.device)
    start = time.perf_counter()
    plan = build_plan()
    trainer.train_epoch(plan)
    sync(trainer.settings.device)
    return time.perf_counter() - start, len(plan)


def train_steps(trainer, batches: Iterable[torch.Tensor], lr: float = 0.01) -> None:
    """Single-process training steps on the given index batches, images gathered from the trainer's source."""
    for group in trainer.parts.optimizer.param_groups:
        group["lr"] = lr
    for indices, images in trainer.parts.source.batches(list(batches)):
        trainer.train_step(indices, images, None, indices)


def phase_seconds(trainer, batches: list[torch.Tensor], lr: float = 0.01) -> dict[str, dict[str, float]]:
    """Mean seconds per step of each phase, read from the trainer's ``record_function`` ranges under
    ``torch.profiler`` (one untimed warm-up step first, then one timed step per remaining batch).

    Returns ``{"host": {...}, "device": {...}}``: host is the CPU time inside each range (on the CPU, the
    phase's time; on CUDA, the time to issue its work); device, on CUDA only, the GPU time of the kernels and
    copies each range launched, summed (idle gaps excluded)."""
    cuda = trainer.settings.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    train_steps(trainer, batches[:1], lr)
    sync(trainer.settings.device)
    with profile(activities=activities) as prof:
        train_steps(trainer, batches[1:], lr)
        sync(trainer.settings.device)
    host: dict[str, float] = {}
    device: dict[str, float] = {}
    span: dict[str, float] = {}
    for entry in prof.key_averages():
        if entry.key not in PHASES or not entry.count:
            continue
        if entry.device_type == torch.autograd.DeviceType.CPU:
            host[entry.key] = entry.cpu_time_total / entry.count / 1e6
            if cuda:
                device[entry.key] = entry.device_time_total / entry.count / 1e6
        elif cuda:  # the range as marked on the GPU's timeline (first kernel's start to last one's end)
            span[entry.key] = entry.device_time_total / entry.count / 1e6
    if cuda and not any(device.values()):  # no kernels linked to the host ranges: use the GPU-side marks
        device = span
    return {"host": host, "device": device} if cuda else {"host": host}


def median_seconds_per_call(run: Callable[[], object], device: torch.device, calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean seconds of one ``run()`` among ``calls`` back to back."""
    return statistics.median(timed(lambda: [run() for _ in range(calls)], device) / calls for _ in range(repeats))


def failing_call(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame, and the innermost one in this repository when
    that is another (e.g. the project line that called a library which synchronised)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def where(frame) -> str:
        path = Path(frame.filename)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(*path.parts[-3:])
        return f"{shown}:{frame.lineno} in {frame.name} ({(frame.line or '').strip()[:120]})"

    inner = frames[-1]
    ours = [f for f in frames if Path(f.filename).is_relative_to(ROOT / "ssl_emp")]
    text = where(inner)
    if ours and ours[-1] is not inner:
        text += f", called from {where(ours[-1])}"
    return text


def sync_debug_pass(run: Callable[[], object]) -> Union[int, str]:
    """Run ``run()`` under ``torch.cuda.set_sync_debug_mode("error")``: 0 if it finished without a
    device-to-host synchronisation, else a line naming the first synchronising call. Needs CUDA."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
        return 0
    except RuntimeError as exc:
        return f"synchronised: {failing_call(exc)}: {str(exc).splitlines()[0][:200]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
