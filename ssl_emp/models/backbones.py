"""Backbones addressed by name. Each returns a module mapping images to a flat feature vector.

ResNets are torchvision's own classes with ``fc`` replaced by ``Identity``; :func:`torchvision_resnet` builds
the same model (stem included) for anyone loading an exported backbone. ``timm/<name>`` is any timm model as a
feature extractor (:func:`timm_backbone`), its keys timm's own, so an export loads back into timm.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torchvision
from torch import nn

from ssl_emp.models.names import TIMM_PREFIX, check_built_in_name

RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def torchvision_resnet(
    name: str, in_channels: int = 3, cifar_stem: bool = False, num_classes: int = 0, **kwargs
) -> torchvision.models.ResNet:
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


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError("timm backbones need timm: pip install timm") from None
    return timm


def check_backbone_name(name: str) -> None:
    """Raise ValueError, in one line naming the closest known names, unless ``name`` is a backbone this module
    builds: one of :data:`BACKBONES`, or ``timm/`` and a model timm knows (with or without a pretrained tag)."""
    check_built_in_name(name)
    if name in BACKBONES:
        return
    timm, model = _timm(), name[len(TIMM_PREFIX) :]
    if not timm.is_model(model):
        closest = difflib.get_close_matches(model, timm.list_models(), n=4, cutoff=0.5)
        raise ValueError(
            f"timm has no model '{model}'"
            + (
                f"; closest: {', '.join(TIMM_PREFIX + c for c in closest)}"
                if closest
                else "; timm.list_models('*pattern*') lists them"
            )
        )


def timm_arguments(
    name: str, in_channels: int, image_size: Optional[int], timm_kwargs: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """``timm.create_model(**these)`` builds the feature extractor ``timm/<name>`` is (``name`` without the prefix):
    no classifier, ``in_channels`` inputs and, for a model with a fixed input size (ViTs, Swin), ``image_size``;
    ``timm_kwargs`` are passed on (e.g. ``patch_size``, ``drop_path_rate``). Loading an export needs the same."""
    timm, args = _timm(), {"model_name": name, "num_classes": 0, "in_chans": in_channels}
    config = timm.models.get_pretrained_cfg(name.split(".")[0])
    # timm's pretrained config says which models bake the input size into their weights (a ViT's position
    # embedding); other models take any size and have no img_size argument.
    if image_size is not None and config is not None and getattr(config, "fixed_input_size", False):
        args["img_size"] = image_size
    return {**args, **(timm_kwargs or {})}


def timm_backbone(
    name: str,
    in_channels: int,
    image_size: Optional[int] = None,
    timm_kwargs: Optional[dict[str, Any]] = None,
    pretrained_file: Optional[str] = None,
) -> tuple[nn.Module, int]:
    """``(model, feature_dim)``: timm's ``name`` (without ``timm/``) as a feature extractor, randomly initialised
    unless ``pretrained_file`` names a local weights file (nothing is ever downloaded; timm adapts the first
    conv to ``in_channels`` and drops the classifier). One forward of a blank batch at ``image_size`` checks the
    model works at that size (some fail only when run, e.g. a ViT whose patches exceed the image) and reads the
    feature dimension the heads need. Any failure is one ValueError line."""
    check_backbone_name(TIMM_PREFIX + name)
    timm = _timm()
    args = timm_arguments(name, in_channels, image_size, timm_kwargs)
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise ValueError(f"no weights file at '{pretrained_file}' (timm backbones load local files only)")
        args.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file), "num_classes": 0})
    size = f"{image_size} px" if image_size is not None else "its default size"
    try:
        model = timm.create_model(**args)
        probe = image_size or model.pretrained_cfg.get("input_size", (in_channels, 224, 224))[-1]
        with torch.no_grad():
            features = model.eval()(torch.zeros(2, in_channels, probe, probe))
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError) as exc:
        # timm names the problem (an unknown keyword, a size the architecture cannot take, a missing file)
        # in its own words; keep the first line of it.
        closest = [c for c in difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6) if c != name]
        hint = f"; similar models: {', '.join(closest)}" if closest else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"timm cannot build '{name}' with {in_channels} channel(s) at {size} "
            f"({type(exc).__name__}: {reason[:300]}){hint}"
        ) from None
    return model.train(), features.shape[-1]


def build_backbone(
    name: str,
    in_channels: int,
    cifar_stem: bool = False,
    width: int = 64,
    *,
    image_size: Optional[int] = None,
    timm_kwargs: Optional[dict[str, Any]] = None,
    pretrained_file: Optional[str] = None,
) -> tuple[nn.Module, int]:
    """Returns ``(backbone, feature_dim)``. ``image_size``, ``timm_kwargs`` and ``pretrained_file`` are read by
    ``timm/<name>`` backbones only (see :func:`timm_backbone`)."""
    if name.startswith(TIMM_PREFIX):
        return timm_backbone(name[len(TIMM_PREFIX) :], in_channels, image_size, timm_kwargs, pretrained_file)
    check_backbone_name(name)
    return BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem, width=width)
