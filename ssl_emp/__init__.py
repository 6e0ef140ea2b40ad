"""ssl_emp: contrastive self-supervised pretraining with dynamic data pruning.

``ssl_emp.train(out=..., data=...)`` pretrains and returns the run; ``ssl_emp.load_backbone(path)`` gives a
trained backbone. Both import torch and the rest only when called, so ``import ssl_emp`` stays light.
"""

__version__ = "0.1.0"


def load_backbone(path, map_location="cpu"):
    """A pretrained backbone, ready to use; see :func:`ssl_emp.export.load_backbone`."""
    from ssl_emp.export import load_backbone as _load

    return _load(path, map_location)


def __getattr__(name):
    # The one-call API lives in ssl_emp.api; it is imported on first use (PEP 562), not with the package.
    if name in ("train", "Run"):
        from ssl_emp import api

        return getattr(api, name)
    raise AttributeError(f"module 'ssl_emp' has no attribute '{name}'")


__all__ = ["Run", "load_backbone", "train", "__version__"]
