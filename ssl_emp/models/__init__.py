from ssl_emp.models.backbones import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
