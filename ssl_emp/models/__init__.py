from ssl_emp.models.backbones import BACKBONES, build_backbone, torchvision_resnet

__all__ = ["BACKBONES", "build_backbone", "torchvision_resnet"]
