"""Backbones addressed by name. Each returns a module mapping images to a flat feature vector.

ResNets are torchvision's own classes with ``fc`` replaced by ``Identity``; :func:`torchvision_resnet` builds
the same model (stem included) for anyone loading an exported backbone.
"""

from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn


RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def torchvision_resnet(name: str, in_channels: int = 3, cifar_stem: bool = False, num_classes: int = 0,
                       **kwargs) -> torchvision.models.ResNet:
    """A torchvision ResNet shaped as ssl_emp builds it, so an exported backbone loads with ``strict=True``::

        model = torchvision_resnet("resnet18", in_channels=1, cifar_stem=True)  # backbone.json has the values
        model.load_state_dict(safetensors.torch.load_file("backbone.safetensors"))

    ``num_classes=0``: ``fc`` is ``Identity`` and the model returns pooled features (the exported backbone);
    more adds a fresh linear head (load the backbone with ``strict=False``: only ``fc`` is then missing).
    Other keyword arguments go to the torchvision constructor (e.g. ``zero_init_residual``)."""
    if name not in RESNETS:
        raise ValueError(f"Unknown torchvision ResNet '{name}'. Known: {', '.join(RESNETS)}.")
    net = RESNETS[name](weights=None, **kwargs)
    if cifar_stem:
        # Small images lose too much to a 7x7 stride-2 conv and a max-pool.
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Linear(net.fc.in_features, num_classes) if num_classes else nn.Identity()
    return net


FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}  # each ResNet's pooled feature width


def _resnet(name: str):
    def build(in_channels: int = 3, cifar_stem: bool = False, **_: object) -> tuple[nn.Module, int]:
        return torchvision_resnet(name, in_channels, cifar_stem), FEATURE_DIMS[name]
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
    **{name: _resnet(name) for name in RESNETS},
}


def build_backbone(name: str, in_channels: int, cifar_stem: bool = False, width: int = 64) -> tuple[nn.Module, int]:
    """Returns ``(backbone, feature_dim)``."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'. Known: {', '.join(BACKBONES)}.")
    return BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem, width=width)


