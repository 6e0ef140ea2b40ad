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


def long_tailed(
    bank: ImageBank, imbalance: float = 100.0, max_per_class: int | None = None, seed: int = 0
) -> LongTailed:
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


def with_near_duplicates(
    bank: ImageBank, unique: int, bases: int, copies: int, max_shift: int = 2, noise: float = 8.0, seed: int = 0
) -> NearDuplicates:
    """``unique`` images drawn from ``bank`` plus ``bases`` more, each followed by ``copies`` near-duplicates:
    shifted by up to ``max_shift`` pixels each way (edge pixels repeated) and with Gaussian pixel noise of std
    ``noise`` (in 0-255 units). The pool holds ``unique + bases * (1 + copies)`` images, in a seeded order."""
    if unique + bases > len(bank):
        raise ValueError(f"unique + bases = {unique + bases} but the bank has {len(bank)} images")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(bank), generator=generator)[: unique + bases]
    source = bank.images.cpu()[chosen]
    labels = bank.labels.cpu()[chosen]
    base_images = source[unique:].repeat_interleave(copies, dim=0)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(base_images), 2), generator=generator)
    pad = max_shift
    padded = torch.nn.functional.pad(base_images.float(), (pad, pad, pad, pad), mode="replicate")
    side_h, side_w = source.shape[-2:]
    moved = torch.stack(
        [
            padded[i, :, pad + dy : pad + dy + side_h, pad + dx : pad + dx + side_w]
            for i, (dy, dx) in enumerate(shifts.tolist())
        ]
    )
    moved = moved + noise * torch.randn(moved.shape, generator=generator)
    copies_u8 = moved.round().clamp(0, 255).to(torch.uint8)
    images = torch.cat([source, copies_u8])
    all_labels = torch.cat([labels, labels[unique:].repeat_interleave(copies)])
    base_of = torch.cat([torch.arange(unique + bases), (unique + torch.arange(bases)).repeat_interleave(copies)])
    is_copy = torch.cat([torch.zeros(unique + bases, dtype=torch.bool), torch.ones(bases * copies, dtype=torch.bool)])
    order = torch.randperm(len(images), generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))  # where each pre-shuffle image lands
    return NearDuplicates(
        ImageBank(
            images[order].to(bank.device),
            all_labels[order].to(bank.labels.device),
            bank.num_classes,
            f"{bank.name}-near-duplicates",
        ),
        is_copy[order],
        position[base_of[order]],
    )


@dataclass
class WithJunk:
    bank: ImageBank
    is_junk: torch.Tensor  # bool [N]: an image that shows nothing the probe asks about (label -1)
    source: torch.Tensor  # int64 [N]: the index in the input bank each sample came from, -1 for junk


JUNK_KINDS = ("flat", "noise", "blur", "other")


def junk_images(
    kind: str, count: int, like: torch.Tensor, generator: torch.Generator, other: ImageBank | None = None
) -> torch.Tensor:
    """``count`` uint8 images shaped like ``like`` [C, H, W]:

    - ``flat``: near-uniform patches (one grey level each, pixel noise of std 4): nothing to learn, easy to tell;
    - ``noise``: smooth random textures (4x4 noise, bilinearly upsampled), edges and blobs without objects;
    - ``blur``: ``other``'s images (other images of the same dataset) under a Gaussian blur of sigma side / 4;
    - ``other``: ``other``'s images (another dataset), resized and with the channels of ``like``.
    """
    channels, side = like.shape[0], like.shape[-1]
    if kind == "flat":
        level = torch.randint(0, 256, (count, 1, 1, 1), generator=generator).float()
        images = level + 4.0 * torch.randn((count, channels, side, side), generator=generator)
    elif kind == "noise":
        coarse = torch.rand((count, channels, 4, 4), generator=generator) * 255
        images = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    elif kind in ("blur", "other"):
        if other is None or len(other) < count:
            raise ValueError(f"junk kind '{kind}' needs at least {count} other images")
        picked = other.images.cpu()[torch.randperm(len(other), generator=generator)[:count]].float()
        picked = torch.nn.functional.interpolate(
            picked, size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
        if picked.shape[1] != channels:
            picked = picked.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
        if kind == "blur":
            sigma = side / 4
            radius = int(2 * sigma)
            taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1).float() / sigma) ** 2)
            taps = (taps / taps.sum()).to(picked)
            flat = picked.reshape(-1, 1, side, side)
            flat = torch.nn.functional.conv2d(
                torch.nn.functional.pad(flat, (radius,) * 4, mode="replicate"), taps.view(1, 1, 1, -1)
            )
            flat = torch.nn.functional.conv2d(flat, taps.view(1, 1, -1, 1))
            picked = flat.reshape(count, channels, side, side)
        images = picked
    else:
        raise ValueError(f"unknown junk kind '{kind}'; known: {', '.join(JUNK_KINDS)}")
    return images.round().clamp(0, 255).to(torch.uint8)


def with_junk(
    bank: ImageBank, real: int, junk: int, kind: str, seed: int = 0, other: ImageBank | None = None
) -> WithJunk:
    """``real`` images drawn from ``bank`` beside ``junk`` images of ``kind`` (:func:`junk_images`; ``blur`` blurs
    other images of ``bank`` unless ``other`` is given), in a seeded order; junk is labelled -1 (no class)."""
    if real > len(bank):
        raise ValueError(f"real = {real} but the bank has {len(bank)} images")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(bank), generator=generator)
    chosen = order[:real]
    if kind == "blur" and other is None:
        other = bank.subset(order[real:].to(bank.device))  # images the pool does not also hold sharp
    made = junk_images(kind, junk, bank.images[0].cpu(), generator, other)
    images = torch.cat([bank.images.cpu()[chosen], made])
    labels = torch.cat([bank.labels.cpu()[chosen], torch.full((junk,), -1, dtype=torch.long)])
    is_junk = torch.cat([torch.zeros(real, dtype=torch.bool), torch.ones(junk, dtype=torch.bool)])
    source = torch.cat([chosen, torch.full((junk,), -1, dtype=torch.long)])
    shuffle = torch.randperm(len(images), generator=generator)
    return WithJunk(
        ImageBank(
            images[shuffle].to(bank.device),
            labels[shuffle].to(bank.labels.device),
            bank.num_classes,
            f"{bank.name}-with-{kind}-junk",
        ),
        is_junk[shuffle],
        source[shuffle],
    )
