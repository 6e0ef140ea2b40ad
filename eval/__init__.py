"""Downstream evaluation of pretrained backbones: ``python -m eval.linear_probe``."""
