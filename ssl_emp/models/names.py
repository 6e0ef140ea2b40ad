"""The backbones' names, known without torch: the config checks a built-in name before torch loads. A ``timm/``
name needs timm (and so torch) to be checked."""

from __future__ import annotations

TIMM_PREFIX = "timm/"
BUILT_IN = ("small_cnn", "resnet18", "resnet34", "resnet50")  # backbones.BACKBONES' keys (a test keeps them equal)


def check_built_in_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a built-in backbone or starts with ``timm/``."""
    if name not in BUILT_IN and not name.startswith(TIMM_PREFIX):
        raise ValueError(
            f"unknown backbone '{name}'; known: {', '.join(BUILT_IN)}, or timm/<any timm model name> "
            "(e.g. timm/resnet50, timm/vit_small_patch16_224)"
        )
