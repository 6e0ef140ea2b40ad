"""ssl_emp: contrastive self-supervised pretraining with dynamic data pruning."""

__version__ = "0.1.0"


def load_backbone(path, map_location="cpu"):
    """A pretrained backbone, ready to use; see :func:`ssl_emp.export.load_backbone`."""
    from ssl_emp.export import load_backbone as _load

    return _load(path, map_location)


__all__ = ["load_backbone", "__version__"]
