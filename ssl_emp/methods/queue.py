"""MoCo's queue of negative keys: a ring buffer that lives on the training device.

lightly's ``MemoryBankModule`` reads its write pointer back to the host on every update, which is a GPU
sync per step; here the pointer is a device tensor and the write is an indexed copy, so a step enqueues
without waiting for the device. The buffers are listed in ``ddp_identical_buffers``: every rank enqueues the
same all-gathered keys, so DDP need not broadcast the (up to 65,536 x 128) queue from rank 0 each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    ddp_identical_buffers = ("keys", "pointer")  # see ssl_emp.methods.base.ddp_ignored_buffer_names

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, new_keys: torch.Tensor) -> None:
        """Write ``new_keys`` [n, dim] over the oldest entries (the last ``size`` of them if n > size)."""
        new_keys = new_keys[-self.size :]
        slots = (self.pointer + torch.arange(new_keys.shape[0], device=self.keys.device)) % self.size
        self.keys[slots] = new_keys.detach().to(self.keys.dtype)
        self.pointer.copy_((self.pointer + new_keys.shape[0]) % self.size)
