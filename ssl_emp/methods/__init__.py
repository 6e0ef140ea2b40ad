"""Contrastive methods, found by name. A new method is one file plus one line in METHODS."""

from __future__ import annotations

from ssl_emp.config import MethodConfig, ModelConfig
from ssl_emp.methods.base import ContrastiveMethod, MethodOutput
from ssl_emp.methods.moco import MoCo
from ssl_emp.methods.simclr import SimCLR
from ssl_emp.models import build_backbone

METHODS: dict[str, type[ContrastiveMethod]] = {
    "simclr": SimCLR,
    "moco": MoCo,
}


def build_method(method_cfg: MethodConfig, model_cfg: ModelConfig, in_channels: int) -> ContrastiveMethod:
    backbone, feature_dim = build_backbone(model_cfg.backbone, in_channels, model_cfg.cifar_stem, model_cfg.width)
    return METHODS[method_cfg.name](backbone, feature_dim, method_cfg, model_cfg)


__all__ = ["METHODS", "ContrastiveMethod", "MethodOutput", "MoCo", "SimCLR", "build_method"]
