"""Self-supervised methods, found by name. A new method is one file plus one line in METHODS.

Each takes plain keyword arguments, so it can be built by hand::

    backbone, feature_dim = build_backbone("resnet18", in_channels=3, cifar_stem=True)
    model = SimCLR(backbone, feature_dim, proj_dim=128, temperature=0.2)
"""

from __future__ import annotations

from ssl_emp.methods.base import ContrastiveMethod
from ssl_emp.methods.byol import BYOL
from ssl_emp.methods.dino import DINO
from ssl_emp.methods.moco import MoCo
from ssl_emp.methods.simclr import SimCLR

METHODS: dict[str, type[ContrastiveMethod]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "dino": DINO,
}

__all__ = ["BYOL", "DINO", "METHODS", "ContrastiveMethod", "MoCo", "SimCLR"]
