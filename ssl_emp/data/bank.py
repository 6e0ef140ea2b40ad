"""In-memory uint8 image bank: the whole dataset as one tensor."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch


@dataclass
class ImageBank:
    """All images of one split as ``uint8 [N, C, H, W]`` plus ``int64 [N]`` labels.

    Unlabelled images (STL-10's unlabeled split) carry label -1. Keeping uint8
    costs a quarter of float32, so CIFAR-sized sets fit on the GPU and a batch is
    one gather plus one cast: no DataLoader workers.

    It is a batch source for the trainer, as :class:`~ssl_emp.data.ImageFolderStream` is: ``batches`` yields
    each step's ``(indices, uint8 images)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files left out at load
    paths: list[str] = field(default_factory=list)  # an image folder's file of each image, in order (else empty)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"ImageBank needs uint8 [N, C, H, W] images, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageBank: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageBank":
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, indices: torch.Tensor) -> "ImageBank":
        paths = [self.paths[i] for i in indices.tolist()] if self.paths else []
        return ImageBank(self.images[indices], self.labels[indices], self.num_classes, self.name, paths=paths)

    drops_unreadable = False  # every image is in memory: a batch holds exactly the samples asked for

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(indices, uint8 images)`` for each of ``index_batches``, in order: one gather each."""
        for indices in index_batches:
            yield indices, self.images[indices.to(self.device)]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Images at ``indices`` as float in [0, 1] on the bank's device."""
        return self.images[indices].float().div_(255.0)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units, computed in chunks to bound memory."""
        total = torch.zeros(self.channels, dtype=torch.float64)
        total_sq = torch.zeros(self.channels, dtype=torch.float64)
        for start in range(0, len(self), 4096):
            chunk = self.images[start : start + 4096].to(torch.float64).div_(255.0)
            total += chunk.sum(dim=(0, 2, 3)).cpu()
            total_sq += chunk.pow(2).sum(dim=(0, 2, 3)).cpu()
        count = len(self) * self.image_size * self.images.shape[-2]
        mean = total / count
        std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        return mean.tolist(), std.tolist()


def fit_batch_size(batch_size: int, num_images: int, name: str) -> tuple[int, str]:
    """``batch_size``, or ``num_images`` where the data is smaller, with a one-line note that says so (empty
    when nothing changed); ``name`` is the setting as the user gave it (``--batch-size``, ``train.batch_size``)."""
    if batch_size <= num_images:
        return batch_size, ""
    return num_images, f"note: {name} {batch_size} is more than the {num_images} images there are; using {num_images}"
