"""Backbones for other people's code: ``python -m ssl_emp.export --checkpoint RUN_DIR --output backbone.safetensors``.

The export is the backbone's weights as safetensors (or, for an ``--output`` ending in ``.pt``, a bare
``torch.save`` state dict) and a ``.json`` description beside it (also stored in the safetensors header), which
says how to load it:

- torchvision (ResNets): ``ssl_emp.models.torchvision_resnet(name, in_channels=..., cifar_stem=...)`` builds the
  model with ssl_emp's stem and ``fc = Identity``; the weights load into it with ``strict=True``.
- timm (``timm/<name>`` backbones, and ResNets with the standard stem; timm has no CIFAR stem): the keys are
  timm's own, so ``timm.create_model(name, pretrained=True, num_classes=0, in_chans=C,
  pretrained_cfg_overlay=dict(file=...))`` loads it (plus ``img_size`` for a ViT and the run's
  ``model.timm_kwargs``); the description's ``timm`` entry holds those arguments.
- ssl_emp: :func:`load_backbone`, and the ``eval`` commands' ``--checkpoint``, take the export as they take a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ssl_emp.checkpoint import CheckpointError, atomic_save, backbone_state_dict, load_checkpoint
from ssl_emp.models import TIMM_PREFIX, build_backbone
from ssl_emp.models import timm_arguments as timm_create_arguments

EXPORT_FORMAT = "ssl_emp.backbone/1"
HEADER_KEY = "ssl_emp"  # the safetensors metadata entry holding the description
TIMM_RESNETS = ("resnet18", "resnet34", "resnet50")  # same names, same keys as torchvision's in timm


def timm_arguments(description: dict, weights: Union[str, Path]) -> Optional[dict]:
    """``timm.create_model(**these)`` loads the exported backbone, or None where no timm model has its
    architecture. timm keeps input size, mean and std in the pretrained config: the overlay sets the run's."""
    backbone, channels, size = description["backbone"], description["in_channels"], description["image_size"]
    if backbone.startswith(TIMM_PREFIX):
        args = timm_create_arguments(backbone[len(TIMM_PREFIX) :], channels, size, description.get("timm_kwargs"))
    elif backbone in TIMM_RESNETS and not description["cifar_stem"]:
        args = {"model_name": backbone, "num_classes": 0, "in_chans": channels}
    else:
        return None
    return {
        **args,
        "pretrained": True,
        "pretrained_cfg_overlay": {
            "file": str(weights),
            "num_classes": 0,
            "input_size": [channels, size, size],
            "mean": description["mean"],
            "std": description["std"],
        },
    }


def _describe(ckpt: dict, weights: Path) -> dict:
    cfg, data = ckpt["config"], ckpt["data"]
    model, pruning = cfg["model"], cfg["pruning"]
    description = {
        "format": EXPORT_FORMAT,
        "backbone": model["backbone"],
        "in_channels": data["channels"],
        "cifar_stem": model["cifar_stem"],
        "width": model["width"],
        "timm_kwargs": model.get("timm_kwargs", {}),
        "image_size": data["image_size"],
        "mean": data["mean"],
        "std": data["std"],
        "method": cfg["method"]["name"],
        "dataset": cfg["data"]["name"],
        "epoch": ckpt["epoch"],
        "pruning": {"scorer": pruning["scorer"], "selector": pruning["selector"], "rate": pruning["rate"]},
    }
    if model["backbone"] in TIMM_RESNETS:
        description["torchvision"] = (
            f"ssl_emp.models.torchvision_resnet('{model['backbone']}', "
            f"in_channels={data['channels']}, cifar_stem={model['cifar_stem']})"
        )
    description["timm"] = timm_arguments(description, weights.name)
    # What evaluation needs to rebuild the run's data and views: the run's settings and data as the checkpoint has them.
    description["config"], description["data"] = cfg, data
    return description


def _write_safetensors(state: dict[str, torch.Tensor], description: dict, output: Path) -> None:
    from safetensors.torch import save

    blob = save(
        {k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt", HEADER_KEY: json.dumps(description)}
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, output)  # a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)


def export_backbone(checkpoint: Union[str, Path], output: Union[str, Path]) -> tuple[Path, Path]:
    """Write the backbone's weights (safetensors, or a bare state dict for ``.pt``) and a JSON description beside
    them; returns both paths."""
    ckpt = load_checkpoint(checkpoint)
    output = Path(output)
    state, description = backbone_state_dict(ckpt["model"]), _describe(ckpt, output)
    if output.suffix == ".pt":
        atomic_save(state, output)
    else:
        _write_safetensors(state, description, output)
    meta = output.with_suffix(".json")
    meta.write_text(json.dumps(description, indent=2) + "\n")
    return output, meta


@dataclass
class SavedBackbone:
    """A backbone's weights and what was recorded with them, from a run, a checkpoint or an export."""

    state: dict[str, torch.Tensor]
    architecture: dict  # backbone, in_channels, cifar_stem, width, image_size, timm_kwargs
    config: Optional[dict]  # the pretraining run's settings (None in an export that lacks them)
    data: Optional[dict]  # channels, image_size, mean, std, ... of its data
    epoch: int

    def build(self) -> tuple[nn.Module, int]:
        """``(backbone, feature_dim)``, randomly initialised, of this architecture."""
        a = self.architecture
        return build_backbone(
            a["backbone"],
            a["in_channels"],
            a["cifar_stem"],
            a["width"],
            image_size=a.get("image_size"),
            timm_kwargs=a.get("timm_kwargs"),
        )


def _read_export(path: Path, map_location) -> tuple[dict, dict]:
    """``(description, state)`` of an exported backbone; CheckpointError where ``path`` is none."""
    meta = path.with_suffix(".json")
    description = json.loads(meta.read_text()) if meta.is_file() else None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                header = (f.metadata() or {}).get(HEADER_KEY)
            state = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"'{path}' is not a readable safetensors file ({exc}).") from None
        description = json.loads(header) if header else description
    else:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a usable state dict
            raise CheckpointError(f"'{path}' is not a readable tensor file ({type(exc).__name__}: {exc}).") from None
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an ssl_emp backbone: its description (the safetensors header or "
            f"'{meta.name}' beside it) is missing or not of format '{EXPORT_FORMAT}'."
        )
    return description, state


def is_export(path: Union[str, Path]) -> bool:
    """Whether ``path`` names an exported backbone rather than a run or a pretraining checkpoint."""
    path = Path(path)
    return path.is_file() and (path.suffix == ".safetensors" or path.with_suffix(".json").is_file())


def read_backbone(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> SavedBackbone:
    """The weights and records of a run directory, a pretraining checkpoint, or an exported backbone (``.safetensors``,
    or ``.pt`` with its ``.json``). Nothing is unpickled beyond tensors and plain values."""
    path = Path(path)
    if is_export(path):
        description, state = _read_export(path, map_location)
        return SavedBackbone(
            state, description, description.get("config"), description.get("data"), description.get("epoch", 0)
        )
    ckpt = load_checkpoint(path, map_location=map_location)  # explains anything that is not a checkpoint
    data, model = ckpt["data"], ckpt["config"]["model"]
    architecture = {
        "backbone": model["backbone"],
        "in_channels": data["channels"],
        "cifar_stem": model["cifar_stem"],
        "width": model["width"],
        "image_size": data["image_size"],
        "timm_kwargs": model.get("timm_kwargs", {}),
    }
    return SavedBackbone(backbone_state_dict(ckpt["model"]), architecture, ckpt["config"], data, ckpt["epoch"])


def load_backbone(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """A ready backbone (a torchvision ResNet with ``fc = Identity``, the small CNN or a timm model), in eval mode,
    from a run directory, a pretraining checkpoint, or an exported backbone (see :func:`read_backbone`)."""
    saved = read_backbone(path, map_location)
    backbone, _ = saved.build()
    try:
        backbone.load_state_dict(saved.state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"The weights in '{path}' do not fit a {saved.architecture['backbone']} backbone: {exc}"
        ) from None
    return backbone.to(map_location).eval()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_emp.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint .pt file")
    parser.add_argument(
        "--output",
        required=True,
        help="where to write the backbone: NAME.safetensors, or NAME.pt for a torch.save state dict",
    )
    args = parser.parse_args(argv)
    try:
        weights, meta = export_backbone(args.checkpoint, args.output)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    description = json.loads(meta.read_text())
    print(f"backbone weights: {weights}\ndescription:      {meta}")
    load = (
        f"safetensors.torch.load_file('{weights}')"
        if weights.suffix != ".pt"
        else f"torch.load('{weights}', weights_only=True)"
    )
    if "torchvision" in description:
        print(
            f"torchvision:      model = {description['torchvision']}\n                  model.load_state_dict({load})"
        )
    timm_args = timm_arguments(description, weights)
    if timm_args is not None:
        shown = ", ".join(
            f"{k}={v!r}" for k, v in timm_args.items() if k not in ("model_name", "pretrained_cfg_overlay")
        )
        print(
            f"timm:             timm.create_model('{timm_args['model_name']}', {shown}, "
            f"pretrained_cfg_overlay=dict(file='{weights}'))"
        )
    elif description["backbone"] in TIMM_RESNETS:
        print("timm:             no timm ResNet has the CIFAR stem (3x3 stride-1 conv1, no max-pool); use torchvision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
