"""A folder of images read from disk as it is trained on (``data.in_memory=false``): for image folders that do
not fit in memory. Workers decode each step's files to uint8 tensors, the batch is pinned and copied without
blocking, and the views are made on the device as for the in-memory bank.

The epoch plan decides which files are read: each step's batch is the plan's, each rank reads its shard. Like
the in-memory :class:`~ssl_emp.data.ImageBank`, it is a batch source: ``batches`` yields each step's
``(indices, uint8 images)``.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ssl_emp.data.datasets import UnreadableImageError, decode_square, default_image_size, image_folder, subset_indices


class ImageFolderStream(Dataset):
    """``root/train/<class>/*`` or an unlabelled folder of images (labels -1), decoded on demand; ``stream[i]``
    is ``(i, uint8 [3, S, S])``, or ``(i, None)`` for an unreadable file when ``skip_unreadable`` (otherwise
    that raises, naming the file)."""

    channels = 3
    name = "imagefolder"
    device = torch.device("cpu")

    def __init__(
        self,
        root: Optional[str],
        image_size: Optional[int],
        subset: Optional[int] = None,
        skip_unreadable: bool = False,
        split: str = "train",
        workers: int = 4,
        pin_memory: bool = False,
    ):
        folder = image_folder(root, split)
        keep = subset_indices(len(folder.paths), subset).tolist()
        self.root = folder.root
        self.paths = [folder.paths[i] for i in keep]
        self.labels = torch.as_tensor([folder.targets[i] for i in keep], dtype=torch.long)
        self.num_classes = len(folder.classes)
        self.image_size = image_size or default_image_size(folder)[0]
        self.skip_unreadable = skip_unreadable
        self.workers, self.pin_memory = workers, pin_memory
        self.unreadable: set[int] = set()  # files skipped as unreadable so far (skip_unreadable)

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

    @property
    def drops_unreadable(self) -> bool:
        """Whether a batch may hold fewer samples than asked for (unreadable files skipped)."""
        return self.skip_unreadable

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(indices read, uint8 images)`` for each of ``index_batches``, in order, decoded by the workers."""
        loader = self.loader([b.cpu().tolist() for b in index_batches], self.workers, self.pin_memory)
        try:
            for read, images, unreadable in loader:
                self.unreadable.update(unreadable.tolist())
                yield read, images
        except UnreadableImageError as exc:
            # Re-raised from a DataLoader worker, the message carries the worker's traceback; its last line
            # names the file.
            reason = str(exc).strip().splitlines()[-1].removeprefix("ssl_emp.data.datasets.")
            raise UnreadableImageError(reason.removeprefix("UnreadableImageError: ").rstrip(".")) from None

    def unreadable_count(self) -> int:
        """Distinct files skipped so far, over all ranks (each reads different files; collective under DDP)."""
        if not (dist.is_available() and dist.is_initialized()):
            return len(self.unreadable)
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, self.unreadable)
        return len(set().union(*everyone))

    def unreadable_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of the files skipped so far, over all ranks (collective under DDP)."""
        everyone: list = [self.unreadable]
        if dist.is_available() and dist.is_initialized():
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, self.unreadable)
        return [(self.paths[i], "could not be decoded") for i in sorted(set().union(*everyone))]

    def loader(self, batches: Sequence[Sequence[int]], workers: int, pin_memory: bool) -> DataLoader:
        """Each of ``batches`` (lists of indices, in order) as ``(indices, images, unreadable indices)``."""
        # Its own generator: the workers' seeds then come from it, not from the global RNG, which the views draw
        # from; so a streamed run augments exactly as the same run from memory does.
        return DataLoader(
            self,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=pin_memory,
            collate_fn=collate_readable,
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(0),
        )


def collate_readable(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the readable images; the unreadable ones' indices come back separately (to be counted)."""
    readable = [(i, image) for i, image in items if image is not None]
    unreadable = torch.tensor([i for i, image in items if image is None], dtype=torch.long)
    if not readable:
        return torch.empty(0, dtype=torch.long), torch.empty(0, 3, 0, 0, dtype=torch.uint8), unreadable
    indices = torch.tensor([i for i, _ in readable], dtype=torch.long)
    return indices, torch.stack([image for _, image in readable]), unreadable
