"""What the W&B dashboard shows besides numbers: the augmented views the model trains on, and the samples the pruner
scores highest, lowest, and has never kept. Plain uint8 pictures here; ``ssl_emp.tracking`` turns them into W&B
media.

Like the online monitor, it draws its views under a forked RNG and switches nothing to eval mode, so a run with
pictures trains exactly as one without (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

DISPLAY_SIDE = 96  # small images (digits are 8 px) are enlarged, pixel for pixel, to about this side


@dataclass
class EpochPictures:
    views: torch.Tensor  # uint8 [H, W, 3]: one row per sample, the original then its two views
    views_caption: str
    samples: list[dict] = field(default_factory=list)  # group, index, score, visits, last_epoch, image [H, W, C]


def _images(source, indices: list[int]) -> tuple[list[int], torch.Tensor]:
    """uint8 ``[N, C, S, S]`` of the samples at ``indices`` that can be read (a streamed folder may skip some)."""
    if hasattr(source, "images"):  # an in-memory bank
        return indices, source.images[torch.as_tensor(indices, device=source.images.device)].cpu()
    read = []
    for i in indices:
        try:
            _, image = source[i]
        except Exception:  # noqa: BLE001 - an unreadable file is the run's concern, not the dashboard's
            image = None
        if image is not None:
            read.append((i, image))
    if not read:
        return [], torch.empty(0, 3, 1, 1, dtype=torch.uint8)
    return [i for i, _ in read], torch.stack([image for _, image in read])


def _enlarge(images: torch.Tensor) -> torch.Tensor:
    factor = max(1, math.ceil(DISPLAY_SIDE / images.shape[-1]))
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def _to_uint8_hwc(image: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` in [0, 1] -> uint8 ``[H, W, 3]`` (gray repeated), what every image viewer takes."""
    return image.expand(3, -1, -1).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def view_pairs(
    source, views, mean: list[float], std: list[float], device: torch.device, count: int = 8
) -> tuple[torch.Tensor, str]:
    """A grid of ``count`` samples spread over the dataset: each row the image and two augmented views."""
    indices, images = _images(source, torch.linspace(0, len(source) - 1, count).long().unique().tolist())
    images = images.to(device).float().div_(255.0)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the training's own draws stay as they would have been
        view0, view1 = views(images)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    rows = torch.stack([images, view0 * s + m, view1 * s + m], dim=1).flatten(0, 1)  # image, view, view, ...
    grid = make_grid(_enlarge(rows.float().cpu()), nrow=3, padding=2, pad_value=1.0)
    return _to_uint8_hwc(grid), f"rows: samples {indices}; columns: the image, view 1, view 2"


def pruner_samples(source, table, per_group: int = 8) -> list[dict]:
    """The samples with the highest and the lowest scores (of those trained on), and some never kept."""
    scores, visits, last_epoch = table.scores.cpu(), table.visits.cpu(), table.last_epoch.cpu()
    seen = torch.isfinite(scores).nonzero().squeeze(1)
    never = (visits == 0).nonzero().squeeze(1)
    groups = {}
    if len(seen):
        order = scores[seen].argsort(descending=True)
        groups["highest score"] = seen[order[:per_group]].tolist()
        groups["lowest score"] = seen[order.flip(0)[:per_group]].tolist()
    if len(never):  # spread over the dataset, not just its first indices
        groups["never kept"] = never[torch.linspace(0, len(never) - 1, min(per_group, len(never))).long()].tolist()
    rows = []
    for group, indices in groups.items():
        read, images = _images(source, indices)
        for i, image in zip(read, _enlarge(images.float().div(255.0))):
            rows.append(
                {
                    "group": group,
                    "index": i,
                    "score": float(scores[i]),
                    "visits": int(visits[i]),
                    "last_epoch": int(last_epoch[i]),
                    "image": _to_uint8_hwc(image),
                }
            )
    return rows


def epoch_pictures(parts, data_info: dict, device: torch.device) -> EpochPictures:
    """The dashboard's pictures for a run's parts (:class:`~ssl_emp.engine.parts.TrainParts`) as they stand:
    ``data_info`` gives the normalisation to undo."""
    channels = parts.source.channels
    mean, std = data_info.get("mean", [0.0] * channels), data_info.get("std", [1.0] * channels)
    grid, caption = view_pairs(parts.source, parts.views, mean, std, device)
    return EpochPictures(grid, caption, pruner_samples(parts.source, parts.pruner.table))
