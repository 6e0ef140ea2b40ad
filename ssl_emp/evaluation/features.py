"""Labelled evaluation data, fitted to a backbone, and its frozen features."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from ssl_emp.data import DEFAULT_ROOT, ImageBank, load_bank
from ssl_emp.device import autocast
from ssl_emp.progress import Progress


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    normalize: nn.Module,
    bank: ImageBank,
    device: torch.device,
    batch_size: int = 512,
    desc: str = "features",
    progress: str = "off",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D] float32, labels [N])`` on ``device``, backbone in eval mode; ``progress`` is a
    :class:`~ssl_emp.progress.Progress` mode (off, auto, bar, lines)."""
    backbone.eval()
    chunks = []
    starts = range(0, len(bank), batch_size)
    shown = Progress(desc, 1, len(bank), mode=progress, every_seconds=30, unit_lines=False)
    shown.start(1, len(starts))
    for step, start in enumerate(starts, 1):
        images = bank.batch(torch.arange(start, min(start + batch_size, len(bank)), device=bank.device)).to(device)
        with autocast(device):
            chunks.append(backbone(normalize(images)).float())
        shown.step(step, len(images))
    shown.close()
    shown.line(f"{desc}: {len(bank)} images")
    return torch.cat(chunks), bank.labels.to(device)


def adapt_bank(bank: ImageBank, channels: int, image_size: int) -> tuple[ImageBank, dict]:
    """``bank`` with the channels and side a backbone expects, and a note of each change made."""
    images, notes = bank.images, {}
    if bank.channels != channels:
        if (bank.channels, channels) == (1, 3):
            images, notes["channels"] = images.expand(-1, 3, -1, -1).contiguous(), "1 -> 3 (gray repeated)"
        elif (bank.channels, channels) == (3, 1):
            images, notes["channels"] = TF.rgb_to_grayscale(images), "3 -> 1 (ITU-R 601 luma)"
        else:
            raise ValueError(f"Cannot feed {bank.channels}-channel images to a backbone made for {channels}.")
    if bank.image_size != image_size:
        notes["image_size"] = f"{bank.image_size} -> {image_size} (antialiased bilinear resize)"
        images = TF.resize(images, [image_size, image_size], antialias=True)
    return replace(bank, images=images), notes


def load_eval_banks(
    pretraining_data: dict,
    data_info: dict,
    root: Optional[str] = None,
    train_subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    dataset: Optional[str] = None,
) -> tuple[ImageBank, ImageBank, dict]:
    """The labelled train and test splits of ``dataset`` (default: the one the backbone was pretrained on,
    described by ``pretraining_data``, the run config's ``data`` section), in the backbone's channels and image
    size (``data_info``: what its checkpoint records); and how they were adapted (empty when nothing was)."""
    pretrained_on = pretraining_data["name"]
    transfer = dataset is not None and dataset != pretrained_on
    name = dataset if transfer else pretrained_on
    # A transfer target has no root in the pretraining config: look where the recipes keep datasets.
    root = root or (pretraining_data.get("root") if not transfer or pretraining_data.get("root") else DEFAULT_ROOT)
    size = None if transfer else (data_info["image_size"] if pretraining_data.get("image_size") is not None else None)
    unlabelled = (
        f"Evaluation needs labelled images, and the {name} images at '{root}' have no labels (an image "
        "folder is labelled when laid out as train/<class>/ and val/<class>/); evaluate on a labelled "
        "dataset with --dataset, or pretrain with monitor.every=0."
    )
    if not transfer and data_info.get("num_classes") == 0:  # known from the checkpoint: refuse before decoding
        raise ValueError(unlabelled)
    # An image folder's undecodable files are left out here as the run left them out (its data.skip_unreadable).
    skip = bool(pretraining_data.get("skip_unreadable", True))
    train = load_bank(name, root, "train", size, train_subset, skip_unreadable=skip)
    if not bool((train.labels >= 0).any()):
        raise ValueError(unlabelled)
    test = load_bank(name, root, "test", size, test_subset, skip_unreadable=skip)
    labelled = train.labels >= 0  # STL-10's unlabeled images cannot train a classifier
    if not bool(labelled.all()):
        train = train.subset(labelled.nonzero().squeeze(1))
    adapted: dict = {}
    if transfer:
        channels = data_info.get("channels", train.channels)
        train, adapted = adapt_bank(train, channels, data_info["image_size"])
        test, _ = adapt_bank(test, channels, data_info["image_size"])
        adapted["normalization"] = f"{pretrained_on}'s channel mean and std (what the backbone was trained on)"
    return train, test, adapted
