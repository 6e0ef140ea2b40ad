"""Where computation runs and in what precision: the one place every entry point asks."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA if available, else CPU; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and local_rank and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} was asked for but CUDA is not available here; use cpu or auto.")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (where ``enabled``); on the CPU, full precision."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def full_precision(device: torch.device):
    """Autocast off inside a bf16 region: similarities, logits and per-sample losses are computed in float32
    while the backbone runs in bf16. At tau = 0.2 a bf16 logit resolves about 0.04, the size of the
    differences pruning ranks by; casting the product to float afterwards is too late."""
    return torch.autocast(device.type, enabled=False)
