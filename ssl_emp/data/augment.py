"""Two-view SimCLR augmentation that runs on the training device, on whole batches.

Every transform draws its parameters per sample (kornia's ``same_on_batch=False``),
so one call augments a batch as a CPU DataLoader would, without the workers.
"""

from __future__ import annotations

from typing import Optional

import kornia.augmentation as K
import torch
from torch import nn


def _blur_kernel(image_size: int) -> int:
    # SimCLR uses a kernel of 10% of the image side, made odd.
    kernel = max(3, int(0.1 * image_size))
    return kernel if kernel % 2 == 1 else kernel + 1


def build_view_pipeline(
    image_size: int,
    channels: int,
    mean: list[float],
    std: list[float],
    *,
    crop_scale_min: float = 0.08,
    hflip_p: float = 0.5,
    jitter_strength: float = 0.5,
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: Optional[float] = None,
    crop_scale_max: float = 1.0,
) -> nn.Sequential:
    """One random view of ``image_size`` px: crop, flip, colour jitter, grayscale, blur, then normalisation.
    ``blur_p`` None: 0.5 for views of 64 px or more, else no blur."""
    s = jitter_strength
    ops: list[nn.Module] = [
        K.RandomResizedCrop((image_size, image_size), scale=(crop_scale_min, crop_scale_max)),
    ]
    if hflip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=hflip_p))
    if jitter_p > 0 and s > 0:
        if channels == 3:
            ops.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=jitter_p))
        else:
            # Saturation and hue are undefined for one channel; brightness and contrast still apply.
            ops.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.0, 0.0, p=jitter_p))
    if channels == 3 and grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=grayscale_p))
    blur_p = blur_p if blur_p is not None else (0.5 if image_size >= 64 else 0.0)
    if blur_p > 0:
        ops.append(K.RandomGaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0), p=blur_p))
    ops.append(K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))
    return nn.Sequential(*ops)


def default_local_size(image_size: int) -> int:
    """DINO's local crops are 96 px beside 224 px views: the same ratio at any image size."""
    return max(4, round(image_size * 96 / 224))


class TwoViews(nn.Module):
    """``x [B, C, H, W]`` in [0, 1] -> two independently augmented, normalised views. Keyword arguments are
    :func:`build_view_pipeline`'s (the config's ``augment`` section).

    Multi-crop (DINO): with ``local_crops`` > 0, :meth:`local_views` makes that many smaller views
    (``local_crop_size`` px, default :func:`default_local_size`) of crops covering ``local_crop_scale_min`` to
    ``local_crop_scale_max`` of the image, with the same colour recipe."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        mean: list[float],
        std: list[float],
        *,
        local_crops: int = 0,
        local_crop_size: Optional[int] = None,
        local_crop_scale_min: float = 0.05,
        local_crop_scale_max: float = 0.4,
        **view_settings,
    ):
        super().__init__()
        self.view = build_view_pipeline(image_size, channels, mean, std, **view_settings)
        self.local_crops = local_crops
        if local_crops:
            local = {**view_settings, "crop_scale_min": local_crop_scale_min, "crop_scale_max": local_crop_scale_max}
            self.local_size = local_crop_size or default_local_size(image_size)
            self.local_view = build_view_pipeline(self.local_size, channels, mean, std, **local)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(images), self.view(images)

    @torch.no_grad()
    def local_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.local_view(images) for _ in range(self.local_crops)]


class Normalize(nn.Module):
    """The evaluation-time input transform: normalisation only."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def build_finetune_pipeline(
    image_size: int, mean: list[float], std: list[float], crop_scale_min: float = 0.5, hflip_p: float = 0.5
) -> nn.Sequential:
    """Supervised fine-tuning's lighter augmentation, on the device: crop, flip, normalisation."""
    ops: list[nn.Module] = [K.RandomResizedCrop((image_size, image_size), scale=(crop_scale_min, 1.0))]
    if hflip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=hflip_p))
    ops.append(K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))
    return nn.Sequential(*ops)
