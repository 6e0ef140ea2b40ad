"""Backbones for other people's code: ``python -m ssl_emp.export --checkpoint RUN_DIR --output backbone.pt``.

The exported ``.pt`` is a bare state dict of tensors, so it loads with nothing but torchvision::

    model = torchvision.models.resnet50()
    missing, unexpected = model.load_state_dict(torch.load("backbone.pt", weights_only=True), strict=False)
    # missing == ["fc.weight", "fc.bias"]: the classifier is not part of a self-supervised backbone

Differences from a stock torchvision ResNet, recorded in the ``.json`` written beside the weights:
``fc`` is removed (the backbone ends at the pooled features), a CIFAR-stem backbone has a 3x3 stride-1
``conv1`` and no max-pool, and a 1-channel backbone's ``conv1`` takes one input channel. Build the model
with those changes (or call :func:`load_backbone`, which does) before a strict load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ssl_emp.checkpoint import CheckpointError, atomic_save, backbone_state_dict, load_checkpoint
from ssl_emp.models import build_backbone

EXPORT_FORMAT = "ssl_emp.backbone/1"


def _describe(ckpt: dict) -> dict:
    cfg, data = ckpt["config"], ckpt["data"]
    model, pruning = cfg["model"], cfg["pruning"]
    return {"format": EXPORT_FORMAT, "backbone": model["backbone"], "in_channels": data["channels"],
            "cifar_stem": model["cifar_stem"], "width": model["width"],
            "image_size": data["image_size"], "mean": data["mean"], "std": data["std"],
            "method": cfg["method"]["name"], "dataset": cfg["data"]["name"], "epoch": ckpt["epoch"],
            "pruning": {"scorer": pruning["scorer"], "selector": pruning["selector"], "rate": pruning["rate"]}}


def export_backbone(checkpoint: Union[str, Path], output: Union[str, Path]) -> tuple[Path, Path]:
    """Write the backbone's weights (bare state dict) and a JSON description beside them."""
    ckpt = load_checkpoint(checkpoint)
    output = Path(output)
    atomic_save(backbone_state_dict(ckpt["model"]), output)
    meta = output.with_suffix(".json")
    meta.write_text(json.dumps(_describe(ckpt), indent=2) + "\n")
    return output, meta


def _build(description: dict) -> nn.Module:
    backbone, _ = build_backbone(description["backbone"], description["in_channels"], description["cifar_stem"],
                                 description["width"])
    return backbone


def load_backbone(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """A ready backbone (a torchvision ResNet with ``fc = Identity``, or the small CNN), in eval mode.

    ``path`` is a run directory, a pretraining checkpoint, or an exported ``backbone.pt`` (with its ``.json``).
    Nothing is unpickled beyond tensors and plain values.
    """
    path = Path(path)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():  # an exported backbone and its description
        description = json.loads(meta.read_text())
        if description.get("format") != EXPORT_FORMAT:
            raise CheckpointError(f"'{meta}' is not an ssl_emp backbone description (format '{EXPORT_FORMAT}').")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a usable state dict
            raise CheckpointError(f"'{path}' is not a readable tensor file ({type(exc).__name__}: {exc}).") from None
    else:  # a run directory or a pretraining checkpoint; load_checkpoint explains anything else
        ckpt = load_checkpoint(path, map_location=map_location)
        description, state = _describe(ckpt), backbone_state_dict(ckpt["model"])
    backbone = _build(description)
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"The weights in '{path}' do not fit a {description['backbone']} backbone: {exc}") from None
    return backbone.eval()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_emp.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint .pt file")
    parser.add_argument("--output", required=True, help="where to write the backbone's state dict (.pt)")
    args = parser.parse_args(argv)
    try:
        weights, meta = export_backbone(args.checkpoint, args.output)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"backbone weights: {weights}\ndescription:      {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
