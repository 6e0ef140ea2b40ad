from ssl_emp.models.backbones import (
    BACKBONES,
    TIMM_PREFIX,
    build_backbone,
    check_backbone_name,
    timm_arguments,
    timm_backbone,
    torchvision_resnet,
)

__all__ = [
    "BACKBONES",
    "TIMM_PREFIX",
    "build_backbone",
    "check_backbone_name",
    "timm_arguments",
    "timm_backbone",
    "torchvision_resnet",
]
