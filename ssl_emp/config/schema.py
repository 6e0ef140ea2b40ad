"""The typed sections of a pretraining run: what each setting is, its default and its valid range.

A recipe's keys mirror :class:`PretrainConfig`. The pruning section is derived from
``ssl_emp.pruning.PruningSettings``, so the engine and the config declare each pruning setting once.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator, model_validator

from ssl_emp import pruning
from ssl_emp.methods import settings as method_settings


class ConfigError(ValueError):
    """A recipe or override that does not describe a valid run."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: Literal["digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder"] = Field(
        "digits", description="dataset to pretrain on"
    )
    root: Optional[str] = Field(None, description="dataset folder (not needed for digits)")
    image_size: Optional[int] = Field(
        None,
        ge=4,
        description="resize every image to this square size at load (imagefolder: by default read from "
        "its images, their shorter side, or its median where it varies, at most 224)",
    )
    subset: Optional[int] = Field(None, ge=1, description="use only the first N training images (seeded shuffle)")
    bank_device: Literal["auto", "cpu"] = Field(
        "auto", description="auto: keep the uint8 image bank on the training device"
    )
    in_memory: bool = Field(
        True,
        description="false: stream an imagefolder from disk through DataLoader workers "
        "instead of decoding it all into memory",
    )
    workers: int = Field(4, ge=0, description="DataLoader workers decoding images when streaming")
    skip_unreadable: bool = Field(
        True,
        description="an image folder's files that cannot be decoded are left out, counted and listed in the run "
        "folder's unreadable_files.txt; false: the first one stops the run, named",
    )

    @model_validator(mode="after")
    def _streams_folders_only(self):
        if not self.in_memory and self.name != "imagefolder":
            raise ValueError(
                f"data.in_memory=false streams image files from a folder (data.name=imagefolder); "
                f"'{self.name}' is loaded into memory by its own loader"
            )
        return self


class AugmentConfig(_Section):
    """The SimCLR view recipe; every transform is random per sample."""

    crop_scale_min: float = Field(0.08, gt=0, le=1, description="random resized crop: smallest area fraction")
    hflip_p: float = Field(0.5, ge=0, le=1)
    jitter_strength: float = Field(
        0.5, ge=0, description="colour jitter: brightness/contrast/saturation 0.8s, hue 0.2s"
    )
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1, description="ignored for 1-channel data")
    blur_p: Optional[float] = Field(
        None, ge=0, le=1, description="gaussian blur probability; default 0.5 for images >= 64 px, else off"
    )
    local_crops: int = Field(
        0,
        ge=0,
        description="dino: small crops per sample beside the two views, seen by the student only (multi-crop; 0: off)",
    )
    local_crop_size: Optional[int] = Field(
        None, ge=4, description="dino: side of the local crops in px; default 96/224 of the image size"
    )
    local_crop_scale_min: float = Field(0.05, gt=0, le=1, description="dino: local crops' smallest area fraction")
    local_crop_scale_max: float = Field(0.4, gt=0, le=1, description="dino: local crops' largest area fraction")

    @model_validator(mode="after")
    def _local_scales_ordered(self):
        if self.local_crop_scale_min > self.local_crop_scale_max:
            raise ValueError(
                f"augment.local_crop_scale_min={self.local_crop_scale_min} is above "
                f"augment.local_crop_scale_max={self.local_crop_scale_max}"
            )
        return self


class ModelConfig(_Section):
    backbone: str = Field(
        "small_cnn",
        description="small_cnn | resnet18 | resnet34 | resnet50 | timm/<any timm "
        "model> (e.g. timm/vit_small_patch16_224; input size from the data)",
    )
    cifar_stem: bool = Field(False, description="ResNet only: 3x3 stride-1 first conv and no max-pool")
    width: int = Field(64, ge=8, description="small_cnn only: channels of the first block")
    timm_kwargs: dict[str, Union[StrictBool, int, float, str]] = Field(
        default_factory=dict,
        description="timm backbones: more arguments to timm.create_model, e.g. {patch_size: 4, drop_path_rate: 0.1}",
    )
    pretrained_file: Optional[str] = Field(
        None, description="timm backbones: start from this local weights file (nothing is downloaded)"
    )
    proj_hidden_dim: int = Field(512, ge=1)
    proj_output_dim: int = Field(128, ge=1, description="the head's output (dino: the K dimensions of its softmax)")

    @field_validator("backbone")
    @classmethod
    def _buildable(cls, value: str) -> str:
        from ssl_emp.models.names import TIMM_PREFIX, check_built_in_name

        check_built_in_name(value)
        if value.startswith(TIMM_PREFIX):  # only timm knows its models, and it loads torch: only for timm/ names
            from ssl_emp.models import check_backbone_name

            check_backbone_name(value)
        return value


def _method_fields() -> dict:
    """Every method's settings (``ssl_emp.methods.settings``) as one section's pydantic fields, each described
    with the methods that read it; ``name`` chooses among the registered methods."""
    out = {"name": (Literal[tuple(method_settings.METHODS)], "simclr")}
    docs: dict[str, dict[str, list[str]]] = {}  # setting -> its description -> the methods that give it
    hints = {}
    for method, registered in method_settings.METHODS.items():
        types = get_type_hints(registered.settings)
        for setting in dataclasses.fields(registered.settings):
            docs.setdefault(setting.name, {}).setdefault(setting.metadata["doc"], []).append(method)
            hints[setting.name] = types[setting.name]
    for name, setting in method_settings.shared_fields().items():
        meta = {k: v for k, v in setting.metadata.items() if k not in ("doc", "unit", "shape")}
        doc = "; ".join(f"{', '.join(methods)}: {text}" for text, methods in docs[name].items())
        out[name] = (hints[name], Field(setting.default, description=doc, **meta))
    return out


MethodConfig = create_model(
    "MethodConfig",
    __base__=_Section,
    __module__=__name__,
    __doc__="The self-supervised method and its settings (ssl_emp.methods.settings, their one declaration).",
    **_method_fields(),
)


class OptimConfig(_Section):
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = Field(0.3, gt=0, description="peak learning rate (not scaled by batch size)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    weight_decay_end: Optional[float] = Field(
        None,
        ge=0,
        description="weight decay at the end, reached on a cosine from weight_decay over the run (DINO's "
        "ViT recipe: 0.04 -> 0.4); none: constant",
    )
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_fraction: float = Field(0.0, ge=0, le=1, description="cosine ends at lr * this")
    clip_grad: Optional[float] = Field(
        None, gt=0, description="clip the gradients' global norm to this before each step (none: no clipping)"
    )


class _PruningRules(_Section):
    """The validators of the pruning section; its fields are PruningSettings' (below)."""

    @field_validator("scorer", "selector", "memory", check_fields=False)
    @classmethod
    def _registered(cls, value: str, info):
        known = {"scorer": pruning.SCORERS, "selector": pruning.SELECTORS, "memory": pruning.MEMORY_FORM_NAMES}[
            info.field_name
        ]
        if value not in known:
            raise ValueError(f"unknown {info.field_name} '{value}'; known: {', '.join(known)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _a_rate_means_pruning(cls, data):
        """A rate with no selector named prunes with the recommended method instead of the no-op ``full``
        (``pruning.resolve_method``, the rule the engine's keyword constructor follows)."""
        if (
            isinstance(data, dict)
            and "selector" not in data
            and isinstance(data.get("rate"), (int, float))
            and data["rate"] > 0
        ):
            scorer, selector = pruning.resolve_method(data["rate"], data.get("scorer"), None)
            data = {**data, "scorer": scorer, "selector": selector}
        return data

    @model_validator(mode="after")
    def _settings_agree(self):
        """The engine's own rules on how settings combine (one place: ``pruning.check_settings``)."""
        pruning.check_settings(self, prefix="pruning.")
        return self


def _pruning_fields() -> dict:
    """PruningSettings' fields as pydantic fields: its defaults, types, descriptions and bounds."""
    hints = get_type_hints(pruning.PruningSettings)
    out = {}
    for setting in dataclasses.fields(pruning.PruningSettings):
        meta = dict(setting.metadata)
        out[setting.name] = (hints[setting.name], Field(setting.default, description=meta.pop("doc", None), **meta))
    return out


PruningConfig = create_model(
    "PruningConfig",
    __base__=_PruningRules,
    __module__=__name__,
    __doc__="Dynamic data pruning (ssl_emp.pruning.PruningSettings, the one declaration of these fields); "
    "rate 0 or selector full: no pruning.",
    **_pruning_fields(),
)


class TrainConfig(_Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(
        256, ge=2, description="target batch size; each epoch is split into near-equal batches close to it"
    )
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="channels_last memory format (CUDA only)")
    compile: bool = Field(False, description="torch.compile the model")
    sync_batchnorm: bool = Field(False, description="DDP: BatchNorm statistics over the global batch (SyncBatchNorm)")
    checkpoint_every: int = Field(10, ge=1, description="epochs between checkpoints (one is always written at the end)")
    nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="non-finite loss: stop (keep the last good checkpoint) or skip the step and count it "
        "(skip costs one host sync per step)",
    )
    log_every: int = Field(10, ge=1, description="steps between metric records (each one syncs with the device)")
    max_forwards: Optional[int] = Field(
        None,
        ge=1,
        description="end the run after this many sample-forwards, its last epoch cut short (all the "
        "data for exactly a pruned run's compute: the benchmark's full_equal_compute)",
    )


class MonitorConfig(_Section):
    """Online kNN accuracy on held-out data during pretraining: quality against compute spent."""

    every: int = Field(0, ge=0, description="epochs between kNN checks (0: off; the last epoch is always checked)")
    k: int = Field(200, ge=1)
    temperature: float = Field(0.1, gt=0)
    train_subset: Optional[int] = Field(None, ge=1, description="labelled training images in the kNN bank")
    test_subset: Optional[int] = Field(None, ge=1, description="held-out images classified")
    label_free_every: Optional[int] = Field(
        None,
        ge=0,
        description="epochs between label-free checks (RankMe, alignment, uniformity on a sample of the training "
        "images); none: with the kNN's every, and where the data has no labels, every's value the kNN could not use",
    )
    label_free_images: int = Field(512, ge=16, description="training images the label-free checks read")


class TrackingConfig(_Section):
    wandb: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online when an API key is configured, else offline"
    )
    project: str = "ssl_emp"
    entity: Optional[str] = None
    images_every: int = Field(
        10,
        ge=0,
        description="epochs between W&B pictures: augmented view pairs, and the "
        "samples scored highest, lowest and never kept (0: none; the last epoch is included)",
    )
    checkpoint_artifact: bool = Field(
        False,
        description="upload the last checkpoint to W&B as a model artifact at "
        "the end (off by default: checkpoints can be large)",
    )


class RunConfig(_Section):
    out_dir: str = Field("runs", description="parent folder of run directories")
    name: Optional[str] = Field(None, description="run directory name; default <recipe>-<timestamp>")
    resume: Union[bool, Literal["auto"]] = Field(
        False,
        description="true: continue the run in out_dir/name from its last checkpoint; auto: continue it if it "
        "has one, else start it (a job a cluster may requeue or torchrun restart reruns the same command)",
    )
    extend: bool = Field(
        False,
        description="allow a resumed run a new train.epochs (its learning-rate schedule, "
        "annealing window and per-epoch pruning rate shift)",
    )

    @field_validator("resume", mode="before")
    @classmethod
    def _true_false_or_auto(cls, value):
        # pydantic alone would take "yes" or 1 for true and list both of the union's errors for anything else
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError("run.resume is true, false or auto")


class PretrainConfig(_Section):
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    pruning: PruningConfig = PruningConfig()
    train: TrainConfig = TrainConfig()
    monitor: MonitorConfig = MonitorConfig()
    tracking: TrackingConfig = TrackingConfig()
    run: RunConfig = RunConfig()
