"""Self-supervised methods, found by name. A new method is one file plus one line in ``settings.METHODS``, which
names its settings and its class; the classes load on first use, so reading the settings (the config does)
loads no model library.

Each takes plain keyword arguments, so it can be built by hand::

    backbone, feature_dim = build_backbone("resnet18", in_channels=3, cifar_stem=True)
    model = SimCLR(backbone, feature_dim, proj_dim=128, temperature=0.2)
"""

from __future__ import annotations

from ssl_emp.methods.settings import METHODS as REGISTERED
from ssl_emp.methods.settings import method_class


def __getattr__(name: str):
    # METHODS ({name: class}), SelfSupervisedMethod and each method's class, imported when first asked for;
    # METHODS is built once and kept, so an entry added to it at run time stays.
    if name == "METHODS":
        globals()["METHODS"] = {key: method_class(key) for key in REGISTERED}
        return globals()["METHODS"]
    if name in ("SelfSupervisedMethod", "ContrastiveMethod"):  # ContrastiveMethod: its name before BYOL and DINO
        from ssl_emp.methods.base import SelfSupervisedMethod

        return SelfSupervisedMethod
    for key, method in REGISTERED.items():
        if method.implementation.endswith(f":{name}"):
            return method_class(key)
    raise AttributeError(f"module 'ssl_emp.methods' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "METHODS",
    "REGISTERED",
    "ContrastiveMethod",
    "SelfSupervisedMethod",
    *(method.implementation.split(":")[1] for method in REGISTERED.values()),
]
