"""Each method's settings, declared once beside the registry of methods: defaults, bounds, descriptions, and the
unit of a length (``"epochs"``: the config counts epochs, the method reads a fraction of the run). Torch-free, so
the config reads them without loading a model library.

The config's ``method`` section is derived from these (``ssl_emp.config.MethodConfig``): one flat section, each
setting marked with the methods that read it, a setting no chosen method reads refused or warned about. A new
method is one file plus one line in ``METHODS`` below, which names its settings and where its class lives.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field, fields
from typing import Optional


def _setting(default, doc: str, unit: Optional[str] = None, shape: bool = False, **bounds):
    """A setting's declaration. ``shape``: it sets the shape of saved state (a layer's width, a queue's length),
    so a run cannot change it when it resumes."""
    return field(default=default, metadata={"doc": doc, "unit": unit, "shape": shape, **bounds})


@dataclass
class SimCLRSettings:
    temperature: float = _setting(0.5, "softmax temperature of the contrastive loss", gt=0)
    gather_negatives: bool = _setting(True, "under DDP: use every rank's embeddings as negatives")


@dataclass
class MoCoSettings:
    temperature: float = _setting(0.5, "softmax temperature of the contrastive loss", gt=0)
    momentum: float = _setting(0.99, "EMA weight of the key encoder (constant over the run)", ge=0, le=1)
    queue_size: int = _setting(4096, "negatives kept in the queue", shape=True, ge=1)
    shuffle_bn: bool = _setting(
        True, "under DDP: encode keys on a random draw of the global batch per rank (shuffled BatchNorm)"
    )

    def check_data(self, num_images: int) -> Optional[str]:
        """Why this data cannot train the method (None if it can). Two keys are enqueued per sample (one per
        view), so the queue spans queue_size / 2 samples; a queue spanning the data holds every sample's own
        earlier keys among its negatives."""
        if self.queue_size // 2 >= num_images:
            return (
                f"method.queue_size={self.queue_size} holds the keys of {self.queue_size // 2} samples (two "
                f"views each), not fewer than the dataset's {num_images} images: each sample's own earlier "
                f"keys would be among its negatives. Use a queue below {2 * num_images}."
            )
        return None


@dataclass
class BYOLSettings:
    momentum: float = _setting(
        0.99, "the teacher's EMA weight at the start, rising on a cosine to momentum_end", ge=0, le=1
    )
    momentum_end: float = _setting(1.0, "the teacher's EMA weight at the end", ge=0, le=1)


@dataclass
class DINOSettings:
    momentum: float = _setting(
        0.99, "the teacher's EMA weight at the start, rising on a cosine to momentum_end", ge=0, le=1
    )
    momentum_end: float = _setting(1.0, "the teacher's EMA weight at the end", ge=0, le=1)
    student_temp: float = _setting(0.1, "temperature of the student's softmax", gt=0)
    teacher_temp: float = _setting(0.04, "temperature of the teacher's softmax (after warm-up)", gt=0)
    warmup_teacher_temp: float = _setting(0.04, "the teacher's temperature at the start", gt=0)
    teacher_temp_warmup_epochs: float = _setting(
        0.0, "epochs over which the teacher's temperature rises linearly to teacher_temp", unit="epochs", ge=0
    )
    center_momentum: float = _setting(
        0.9, "EMA weight of the center of the teacher's outputs (subtracted to prevent collapse)", ge=0, lt=1
    )
    bottleneck_dim: int = _setting(
        256, "width of the head's normalised bottleneck (also the embedding the pruner reads)", shape=True, ge=1
    )
    head_batchnorm: bool = _setting(False, "BatchNorm in the head's hidden layers (for CNNs; off for ViTs)", shape=True)
    freeze_last_layer_epochs: float = _setting(
        0.0,
        "epochs at the start during which the head's last layer is not updated (the DINO ViT recipe: 1; it "
        "keeps the early, unstable outputs from collapsing)",
        unit="epochs",
        ge=0,
    )

    # The extra inputs the method takes besides two views: multi-crop's local views (augment.local_crops).
    inputs = ("local_crops",)


@dataclass
class SimSiamSettings:
    prediction_hidden_dim: int = _setting(
        0,
        "width of the predictor's hidden layer (0: a quarter of the projection, the paper's bottleneck)",
        shape=True,
        ge=0,
    )


@dataclass(frozen=True)
class Method:
    settings: type  # the settings dataclass
    implementation: str  # "module:Class", imported when the method is built


METHODS: dict[str, Method] = {
    "simclr": Method(SimCLRSettings, "ssl_emp.methods.simclr:SimCLR"),
    "moco": Method(MoCoSettings, "ssl_emp.methods.moco:MoCo"),
    "byol": Method(BYOLSettings, "ssl_emp.methods.byol:BYOL"),
    "dino": Method(DINOSettings, "ssl_emp.methods.dino:DINO"),
    "simsiam": Method(SimSiamSettings, "ssl_emp.methods.simsiam:SimSiam"),
}


def method_class(name: str) -> type:
    module, cls = METHODS[name].implementation.split(":")
    return getattr(importlib.import_module(module), cls)


def readers() -> dict[str, list[str]]:
    """``{setting: [the methods that read it]}``, in declaration order."""
    found: dict[str, list[str]] = {}
    for name, method in METHODS.items():
        for setting in fields(method.settings):
            found.setdefault(setting.name, []).append(name)
    return found


def shape_settings() -> list[str]:
    """The settings that set the shape of a run's saved state: fixed for the life of a run."""
    return [name for name, setting in shared_fields().items() if setting.metadata.get("shape")]


def inputs_readers(extra: str) -> list[str]:
    """The methods that take an extra input (``"local_crops"``)."""
    return [name for name, method in METHODS.items() if extra in getattr(method.settings, "inputs", ())]


def shared_fields() -> dict[str, dataclasses.Field]:
    """Each setting's declaration, once: a setting two methods share must mean the same to both (the same
    type, default and bounds), so the config can hold it once."""
    out: dict[str, dataclasses.Field] = {}
    for name, method in METHODS.items():
        for setting in fields(method.settings):
            seen = out.get(setting.name)
            if seen is None:
                out[setting.name] = setting
                continue
            same = (seen.type, seen.default, {k: v for k, v in seen.metadata.items() if k != "doc"}) == (
                setting.type,
                setting.default,
                {k: v for k, v in setting.metadata.items() if k != "doc"},
            )
            if not same:
                raise TypeError(
                    f"method setting {setting.name} is declared differently by {name} and an earlier "
                    "method: give it another name or the same type, default and bounds"
                )
    return out


def method_kwargs(name: str, values: dict, epochs: int) -> dict:
    """What the method's constructor takes from the config's values: its own settings, lengths in epochs
    turned into fractions of the run (``x_epochs`` becomes ``x``)."""
    out = {}
    for setting in fields(METHODS[name].settings):
        value = values[setting.name]
        if setting.metadata.get("unit") == "epochs":
            out[setting.name.removesuffix("_epochs")] = value / epochs
        else:
            out[setting.name] = value
    return out


def check_data(name: str, values: dict, num_images: int) -> Optional[str]:
    """Why the data cannot train the method with these settings (None if it can)."""
    settings = METHODS[name].settings(**{f.name: values[f.name] for f in fields(METHODS[name].settings)})
    check = getattr(settings, "check_data", None)
    return check(num_images) if check else None
