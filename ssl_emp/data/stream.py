"""A folder of images read from disk as it is trained on (``data.in_memory=false``): for image folders that do
not fit in memory. Workers decode each step's files to uint8 tensors, the batch is pinned and copied without
blocking, and the views are made on the device as for the in-memory bank.

The epoch plan decides which files are read: each step's batch is the plan's, each rank reads its shard.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ssl_emp.data.datasets import UnreadableImageError, decode_square, image_folder, subset_indices


class ImageFolderStream(Dataset):
    """``root/train/<class>/*``, decoded on demand; ``stream[i]`` is ``(i, uint8 [3, S, S])``, or ``(i, None)``
    for an unreadable file when ``skip_unreadable`` (otherwise that raises, naming the file)."""

    channels = 3
    name = "imagefolder"
    device = torch.device("cpu")

    def __init__(self, root: Optional[str], image_size: Optional[int], subset: Optional[int] = None,
                 skip_unreadable: bool = False, split: str = "train"):
        folder = image_folder(root, split, image_size)
        keep = subset_indices(len(folder), subset).tolist()
        self.root = folder.root
        self.paths = [folder.samples[i][0] for i in keep]
        self.labels = torch.as_tensor([folder.targets[i] for i in keep], dtype=torch.long)
        self.num_classes = len(folder.classes)
        self.image_size = image_size
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, decode_square(self.paths[index], self.image_size)
        except UnreadableImageError:
            if self.skip_unreadable:
                return index, None
            raise

    def to(self, device) -> "ImageFolderStream":
        return self  # stays on disk; each batch is copied to the device as it is trained on

    def channel_stats(self, sample: int = 2048) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units, from a fixed random sample of the files. An unreadable file
        is left out here; training stops at it (or skips it) when it is reached."""
        total = torch.zeros(3, dtype=torch.float64)
        total_sq = torch.zeros(3, dtype=torch.float64)
        count = 0
        for i in subset_indices(len(self), sample).tolist():
            try:
                image = decode_square(self.paths[i], self.image_size)
            except UnreadableImageError:
                continue
            pixels = image.to(torch.float64).div_(255.0)
            total += pixels.sum(dim=(1, 2))
            total_sq += pixels.pow(2).sum(dim=(1, 2))
            count += pixels[0].numel()
        if count == 0:
            raise UnreadableImageError(f"None of the sampled images under '{self.root}' could be read.")
        mean = total / count
        return mean.tolist(), (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt().tolist()

    def loader(self, batches: Sequence[Sequence[int]], workers: int, pin_memory: bool) -> DataLoader:
        """Each of ``batches`` (lists of indices, in order) as ``(indices, images, unreadable indices)``."""
        # Its own generator: the workers' seeds then come from it, not from the global RNG, which the views draw
        # from; so a streamed run augments exactly as the same run from memory does.
        return DataLoader(self, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                          collate_fn=collate_readable, prefetch_factor=4 if workers else None,
                          generator=torch.Generator().manual_seed(0))


def collate_readable(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the readable images; the unreadable ones' indices come back separately (to be counted)."""
    readable = [(i, image) for i, image in items if image is not None]
    unreadable = torch.tensor([i for i, image in items if image is None], dtype=torch.long)
    if not readable:
        return torch.empty(0, dtype=torch.long), torch.empty(0, 3, 0, 0, dtype=torch.uint8), unreadable
    indices = torch.tensor([i for i, _ in readable], dtype=torch.long)
    return indices, torch.stack([image for _, image in readable]), unreadable
