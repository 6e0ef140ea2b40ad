"""Clean-image embeddings of a batch source: the backbone in eval mode on the evaluation transform, as evaluation
reads it. What a coverage-style selector's clustering reads, and what a user's embedding map is made of."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ssl_emp.device import autocast


@torch.no_grad()
def embed(
    source,
    backbone: nn.Module,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    indices: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
    on_batch: Optional[Callable[[int], None]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, float features)`` on ``device`` for the samples at ``indices``, in order. A file that could not
    be read (a streamed folder skips it) comes last with a zero vector, so every index gets a row. The backbone's
    train/eval mode is restored. ``on_batch(n)`` is told each batch's size (for a progress bar)."""
    was_training = backbone.training
    backbone.eval()
    read, features = [], []
    try:
        for batch_indices, images in source.batches(list(indices.split(batch_size))):
            images = images.to(device, non_blocking=True).float().div_(255.0)
            with autocast(device, amp):
                clean = normalize(images).contiguous(memory_format=memory_format)
                features.append(backbone(clean).float())
            read.append(batch_indices.to(device))
            if on_batch is not None:
                on_batch(len(batch_indices))
    finally:
        backbone.train(was_training)
    read, features = torch.cat(read), torch.cat(features)
    if read.numel() < indices.numel():
        wanted = indices.to(device)
        missing = wanted[~torch.isin(wanted, read)]
        read = torch.cat([read, missing])
        features = torch.cat([features, features.new_zeros(len(missing), features.shape[1])])
    return read, features
