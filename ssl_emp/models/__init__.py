from ssl_emp.models.names import TIMM_PREFIX


def __getattr__(name: str):
    # The builders import torch and torchvision, so they load when first asked for; the names do not.
    if name in __all__:
        from ssl_emp.models import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module 'ssl_emp.models' has no attribute '{name}'")


__all__ = [
    "BACKBONES",
    "TIMM_PREFIX",
    "build_backbone",
    "check_backbone_name",
    "timm_arguments",
    "timm_backbone",
    "torchvision_resnet",
]
