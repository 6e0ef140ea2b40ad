"""Backbones addressed by name. Each returns a module mapping images to a flat feature vector.

ResNets are torchvision's own classes with ``fc`` replaced by ``Identity``, so
their state dicts load into ``torchvision.models.resnetXX()`` (minus ``fc``,
and with the CIFAR stem's conv1 shape where that option is on).
"""

from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn


def _resnet(factory: Callable[..., torchvision.models.ResNet]):
    def build(in_channels: int = 3, cifar_stem: bool = False, **_: object) -> tuple[nn.Module, int]:
        net = factory(weights=None)
        if cifar_stem:
            # Small images lose too much to a 7x7 stride-2 conv and a max-pool.
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, feature_dim
    return build


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Sequential):
    """Four conv blocks and global average pooling: quick CPU runs on 8-32 px images."""

    def __init__(self, in_channels: int = 1, width: int = 64):
        super().__init__(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 2 * width


def _small_cnn(in_channels: int = 1, width: int = 64, **_: object) -> tuple[nn.Module, int]:
    net = SmallCNN(in_channels, width)
    return net, net.feature_dim


BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "small_cnn": _small_cnn,
    "resnet18": _resnet(torchvision.models.resnet18),
    "resnet34": _resnet(torchvision.models.resnet34),
    "resnet50": _resnet(torchvision.models.resnet50),
}


def build_backbone(name: str, in_channels: int, cifar_stem: bool = False, width: int = 64) -> tuple[nn.Module, int]:
    """Returns ``(backbone, feature_dim)``."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'. Known: {', '.join(BACKBONES)}.")
    return BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem, width=width)


