"""Uncurated training sets built from a curated one, deterministic from a seed: where choosing samples can matter.

- :func:`long_tailed`: class sizes fall exponentially to an imbalance ratio (CIFAR-10-LT's construction, Cao et
  al. 2019): class ``k`` of ``C`` (in a seeded order) keeps ``n_max * ratio ** (-k / (C - 1))`` images.
- :func:`with_near_duplicates`: a few base images copied many times with small shifts and pixel noise, beside
  unique images, as in web-crawled data (SemDeDup, Abbas et al. 2023).

Both return a new :class:`ImageBank` and what the benchmark needs to read the result (which classes are rare,
which samples are copies).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssl_emp.data.bank import ImageBank


@dataclass
class LongTailed:
    bank: ImageBank
    class_sizes: list[int]  # images kept per class, by class label
    rarest: list[int]  # class labels, rarest first


def long_tailed(bank: ImageBank, imbalance: float = 100.0, max_per_class: int | None = None,
                seed: int = 0) -> LongTailed:
    """Keep ``max_per_class * imbalance ** (-k / (C - 1))`` images of the class ranked ``k`` (the ranking of
    classes and the images kept are drawn from ``seed``); ``max_per_class`` defaults to the smallest class."""
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1 (largest class over smallest), got {imbalance}")
    generator = torch.Generator().manual_seed(seed)
    labels = bank.labels.cpu()
    classes = bank.num_classes
    counts = torch.bincount(labels[labels >= 0], minlength=classes)
    top = int(counts.min()) if max_per_class is None else max_per_class
    if top > int(counts.min()):
        raise ValueError(f"max_per_class={top} but the smallest class has {int(counts.min())} images")
    order = torch.randperm(classes, generator=generator).tolist()  # order[k]: the class ranked k (0 = largest)
    sizes = [0] * classes
    kept = []
    for rank, label in enumerate(order):
        size = max(1, int(top * imbalance ** (-rank / max(classes - 1, 1))))
        members = (labels == label).nonzero().squeeze(1)
        kept.append(members[torch.randperm(len(members), generator=generator)[:size]])
        sizes[label] = size
    kept_indices = torch.cat(kept).sort().values
    return LongTailed(bank.subset(kept_indices.to(bank.device)), sizes, list(reversed(order)))


@dataclass
class NearDuplicates:
    bank: ImageBank
    is_copy: torch.Tensor  # bool [N]: a copy of a base image (the base itself is not counted as a copy)
    base_of: torch.Tensor  # int64 [N]: the index (in the new bank) of the image each sample copies, itself if none


def with_near_duplicates(bank: ImageBank, unique: int, bases: int, copies: int, max_shift: int = 2,
                         noise: float = 8.0, seed: int = 0) -> NearDuplicates:
    """``unique`` images drawn from ``bank`` plus ``bases`` more, each followed by ``copies`` near-duplicates:
    shifted by up to ``max_shift`` pixels each way (edge pixels repeated) and with Gaussian pixel noise of std
    ``noise`` (in 0-255 units). The pool holds ``unique + bases * (1 + copies)`` images, in a seeded order."""
    if unique + bases > len(bank):
        raise ValueError(f"unique + bases = {unique + bases} but the bank has {len(bank)} images")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(bank), generator=generator)[:unique + bases]
    source = bank.images.cpu()[chosen]
    labels = bank.labels.cpu()[chosen]
    base_images = source[unique:].repeat_interleave(copies, dim=0)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(base_images), 2), generator=generator)
    pad = max_shift
    padded = torch.nn.functional.pad(base_images.float(), (pad, pad, pad, pad), mode="replicate")
    side_h, side_w = source.shape[-2:]
    moved = torch.stack([padded[i, :, pad + dy:pad + dy + side_h, pad + dx:pad + dx + side_w]
                         for i, (dy, dx) in enumerate(shifts.tolist())])
    moved = moved + noise * torch.randn(moved.shape, generator=generator)
    copies_u8 = moved.round().clamp(0, 255).to(torch.uint8)
    images = torch.cat([source, copies_u8])
    all_labels = torch.cat([labels, labels[unique:].repeat_interleave(copies)])
    base_of = torch.cat([torch.arange(unique + bases),
                         (unique + torch.arange(bases)).repeat_interleave(copies)])
    is_copy = torch.cat([torch.zeros(unique + bases, dtype=torch.bool), torch.ones(bases * copies, dtype=torch.bool)])
    order = torch.randperm(len(images), generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))  # where each pre-shuffle image lands
    return NearDuplicates(ImageBank(images[order].to(bank.device), all_labels[order].to(bank.labels.device),
                                    bank.num_classes, f"{bank.name}-near-duplicates"),
                          is_copy[order], position[base_of[order]])
