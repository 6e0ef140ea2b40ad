"""Typed, validated run configuration.

A recipe is a YAML file whose keys mirror :class:`PretrainConfig`; command-line
overrides are ``dotted.key=value`` pairs whose values are parsed as YAML
(``train.epochs=5``, ``augment.hflip_p=0``, ``run.name=demo``). Validation is
done by pydantic; its errors are rewritten into one paragraph that names the
offending key, the closest valid key and all valid keys at that level.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssl_emp import pruning


class ConfigError(ValueError):
    """A recipe or override that does not describe a valid run."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: Literal["digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder"] = Field(
        "digits", description="dataset to pretrain on")
    root: Optional[str] = Field(None, description="dataset folder (not needed for digits)")
    image_size: Optional[int] = Field(
        None, ge=4, description="resize every image to this square size at load (required for imagefolder)")
    subset: Optional[int] = Field(None, ge=1, description="use only the first N training images (seeded shuffle)")
    bank_device: Literal["auto", "cpu"] = Field(
        "auto", description="auto: keep the uint8 image bank on the training device")
    in_memory: bool = Field(True, description="false: stream an imagefolder from disk through DataLoader workers "
                                              "instead of decoding it all into memory")
    workers: int = Field(4, ge=0, description="DataLoader workers decoding images when streaming")
    skip_unreadable: bool = Field(False, description="streaming: skip (count and log) image files that cannot be "
                                                     "decoded, instead of stopping the run")

    @model_validator(mode="after")
    def _streams_folders_only(self):
        if not self.in_memory and self.name != "imagefolder":
            raise ValueError(f"data.in_memory=false streams image files from a folder (data.name=imagefolder); "
                             f"'{self.name}' is loaded into memory by its own loader")
        return self


class AugmentConfig(_Section):
    """The SimCLR view recipe; every transform is random per sample."""
    crop_scale_min: float = Field(0.08, gt=0, le=1, description="random resized crop: smallest area fraction")
    hflip_p: float = Field(0.5, ge=0, le=1)
    jitter_strength: float = Field(0.5, ge=0, description="colour jitter: brightness/contrast/saturation 0.8s, hue 0.2s")
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1, description="ignored for 1-channel data")
    blur_p: Optional[float] = Field(
        None, ge=0, le=1, description="gaussian blur probability; default 0.5 for images >= 64 px, else off")


class ModelConfig(_Section):
    backbone: Literal["small_cnn", "resnet18", "resnet34", "resnet50"] = "small_cnn"
    cifar_stem: bool = Field(False, description="ResNet only: 3x3 stride-1 first conv and no max-pool")
    width: int = Field(64, ge=8, description="small_cnn only: channels of the first block")
    proj_hidden_dim: int = Field(512, ge=1)
    proj_output_dim: int = Field(128, ge=1)


class MethodConfig(_Section):
    name: Literal["simclr", "moco"] = "simclr"
    temperature: float = Field(0.5, gt=0)
    momentum: float = Field(0.99, ge=0, le=1, description="moco: EMA weight of the key encoder")
    queue_size: int = Field(4096, ge=1, description="moco: negatives kept in the queue")
    shuffle_bn: bool = Field(True, description="moco under DDP: encode keys on a random draw of the global batch "
                                                "per rank (shuffled BatchNorm)")
    gather_negatives: bool = Field(True, description="simclr under DDP: use every rank's embeddings as negatives")


class OptimConfig(_Section):
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = Field(0.3, gt=0, description="peak learning rate (not scaled by batch size)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_fraction: float = Field(0.0, ge=0, le=1, description="cosine ends at lr * this")


class PruningConfig(_Section):
    """Dynamic data pruning; see ssl_emp/pruning and DESIGN.md. rate 0 or selector full: no pruning."""
    scorer: str = Field("loss", description="loss | emp | ucb")
    selector: str = Field("full", description="full | random | rs2 | infobatch | topk | eps_greedy; a rate "
                          "given without one uses the recommended selector (README)")
    rate: float = Field(0.0, ge=0, lt=1, description="fraction of sample-forwards skipped over the whole run")
    beta: float = Field(1.0, ge=0, allow_inf_nan=False, description="emp: weight of the memory term")
    memory: str = Field("loss_change", description="emp memory form: loss_change | drift | recency | agreement | "
                        "disagreement | entropy | forgetting (default chosen by benchmarks/pruning_quality.py; README)")
    normalize: Literal["zscore", "none"] = Field(
        "zscore", description="emp: put loss and memory on one scale before combining (running z-score), or "
        "none: raw loss + beta * memory (the paper's supervised form)")
    warmup_epochs: int = Field(1, ge=0, description="full-data epochs at the start (fill the score table)")
    anneal: float = Field(0.125, ge=0, lt=1, description="the last ceil(anneal * epochs) epochs train on full data "
                          "(InfoBatch's 1 - delta)")
    eps: float = Field(0.1, ge=0, le=1, description="eps_greedy: random share of the kept budget")
    ucb_c: float = Field(1.0, ge=0, allow_inf_nan=False, description="ucb: weight of the exploration bonus sqrt(log t / n_i)")
    history: int = Field(5, ge=1, description="losses remembered per sample (ucb)")
    infobatch_r: Optional[float] = Field(
        None, ge=0, le=1, description="infobatch: run the published rule with this drop probability (no "
        "pruning.rate needed; the achieved rate is reported); unset: matched to pruning.rate")
    infobatch_rescale: bool = Field(True, description="InfoBatch: weight kept below-threshold samples 1/(1-r)")

    @field_validator("scorer", "selector", "memory")
    @classmethod
    def _registered(cls, value: str, info):
        known = {"scorer": pruning.SCORERS, "selector": pruning.SELECTORS, "memory": pruning.MEMORY_FORMS}[info.field_name]
        if value not in known:
            raise ValueError(f"unknown {info.field_name} '{value}'; known: {', '.join(known)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _a_rate_means_pruning(cls, data):
        """A rate with no selector named prunes with the recommended method instead of the no-op ``full``
        (``pruning.resolve_method``, the rule the engine's keyword constructor follows)."""
        if isinstance(data, dict) and "selector" not in data and isinstance(data.get("rate"), (int, float)) \
                and data["rate"] > 0:
            scorer, selector = pruning.resolve_method(data["rate"], data.get("scorer"), None)
            data = {**data, "scorer": scorer, "selector": selector}
        return data

    @model_validator(mode="after")
    def _settings_agree(self):
        """The engine's own rules on how settings combine (one place: ``pruning.check_settings``)."""
        pruning.check_settings(self, prefix="pruning.")
        return self


class TrainConfig(_Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=2, description="target batch size; each epoch is split into near-equal batches close to it")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="channels_last memory format (CUDA only)")
    compile: bool = Field(False, description="torch.compile the model")
    sync_batchnorm: bool = Field(False, description="DDP: BatchNorm statistics over the global batch (SyncBatchNorm)")
    checkpoint_every: int = Field(10, ge=1, description="epochs between checkpoints (one is always written at the end)")
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="non-finite loss: stop (keep the last good checkpoint) or skip the step and count it "
        "(skip costs one host sync per step)")
    log_every: int = Field(10, ge=1, description="steps between metric records (each one syncs with the device)")


class MonitorConfig(_Section):
    """Online kNN accuracy on held-out data during pretraining: quality against compute spent."""
    every: int = Field(0, ge=0, description="epochs between kNN checks (0: off; the last epoch is always checked)")
    k: int = Field(200, ge=1)
    temperature: float = Field(0.1, gt=0)
    train_subset: Optional[int] = Field(None, ge=1, description="labelled training images in the kNN bank")
    test_subset: Optional[int] = Field(None, ge=1, description="held-out images classified")


class TrackingConfig(_Section):
    wandb: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online when an API key is configured, else offline")
    project: str = "ssl_emp"
    entity: Optional[str] = None


class RunConfig(_Section):
    out_dir: str = Field("runs", description="parent folder of run directories")
    name: Optional[str] = Field(None, description="run directory name; default <recipe>-<timestamp>")
    resume: bool = Field(False, description="continue the run in out_dir/name from its last checkpoint")
    extend: bool = Field(False, description="allow a resumed run a new train.epochs (its learning-rate schedule, "
                                            "annealing window and per-epoch pruning rate shift)")


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


# --------------------------------------------------------------------------- loading

def _section_at(model: type[BaseModel], path: tuple[Union[str, int], ...]) -> Optional[type[BaseModel]]:
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _explain(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            section = _section_at(model, loc[:-1])
            valid = sorted(section.model_fields) if section else []
            prefix = ".".join(str(p) for p in loc[:-1])
            full = [f"{prefix}.{v}" if prefix else v for v in valid]
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" Did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?" if close else ""
            lines.append(f"unknown key '{key}'.{hint} Valid keys here: {', '.join(full)}.")
        else:
            given = err.get("input")
            lines.append(f"'{key}' = {given!r}: {err['msg']}.")
    return ConfigError(f"Invalid configuration ({source}): " + " ".join(lines))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override '{dotted}': '{part}' is a value, not a section.")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not of the form key=value (for example train.epochs=5).")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"Override '{item}': the value is not valid YAML ({exc}).") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Union[str, Path]) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist. Recipes live in configs/ (for example configs/default.yaml).")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections, not {type(tree).__name__}.")
    return tree


def build_config(model: type[BaseModel], tree: dict, overrides: list[str] = (), source: str = "config"):
    merged = _deep_merge(tree, parse_overrides(list(overrides)))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise _explain(exc, model, source) from None


def load_pretrain_config(path: Optional[Union[str, Path]] = None, overrides: list[str] = ()) -> PretrainConfig:
    """A recipe plus command-line overrides; a setting that cannot affect the run is refused when the command
    line gives it, and warned about (one line on stderr) when the recipe does."""
    tree = read_yaml(path) if path else {}
    cfg = build_config(PretrainConfig, tree, overrides, source=str(path) if path else "defaults")
    check_settings_used(cfg, parse_overrides(list(overrides)), tree, recipe=str(path))
    return cfg


# --------------------------------------------------------------------------- settings that take effect

# Settings read only for some values of another setting (pruning's are declared by each scorer and selector).
READ_ONLY_WHEN = {
    "method.momentum": ("method.name", ("moco",)),
    "method.queue_size": ("method.name", ("moco",)),
    "method.shuffle_bn": ("method.name", ("moco",)),
    "method.gather_negatives": ("method.name", ("simclr",)),
    "model.width": ("model.backbone", ("small_cnn",)),
    "model.cifar_stem": ("model.backbone", ("resnet18", "resnet34", "resnet50")),
    "run.extend": ("run.resume", (True,)),
    "data.workers": ("data.in_memory", (False,)),
    "data.skip_unreadable": ("data.in_memory", (False,)),
}
SCHEDULE = ("rate", "warmup_epochs", "anneal")  # read whenever the run prunes


def _get(cfg: BaseModel, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def pruning_readers() -> dict[str, list[str]]:
    """``{setting: [what reads it]}`` for the pruning settings, from each scorer's and selector's declaration."""
    readers: dict[str, list[str]] = {name: [] for name in PruningConfig.model_fields}
    for name, scorer in pruning.SCORERS.items():
        for setting in scorer.reads:
            readers[setting].append(f"scorer {name}")
    for name, selector in pruning.SELECTORS.items():
        for setting in selector.reads:
            readers[setting].append(f"selector {name}")
    readers["scorer"] = [f"selector {n}" for n, s in pruning.SELECTORS.items() if s.uses_scores]
    for setting in SCHEDULE:
        readers[setting] = ["every selector but full"]
    readers["selector"] = ["every run"]
    return readers


def unused_settings(cfg: PretrainConfig) -> dict[str, str]:
    """``{dotted key: why it cannot affect this run}`` for every setting this run does not read."""
    unused = {}
    for key, (decider, values) in READ_ONLY_WHEN.items():
        if _get(cfg, decider) not in values:
            unused[key] = (f"read only when {decider} is {' or '.join(map(str, values))}, and here it is "
                           f"{_get(cfg, decider)}")
    p = cfg.pruning
    selector = pruning.SELECTORS[p.selector]
    prunes = pruning.prunes(p)
    read = {"selector", "rate"}
    if prunes:
        read |= {*SCHEDULE, *selector.reads}
        if selector.uses_scores:
            read |= {"scorer", *pruning.SCORERS[p.scorer].reads}
    elif p.selector != "full":
        unused["pruning.selector"] = "with pruning.rate=0 it prunes nothing; give pruning.rate"
    readers = pruning_readers()
    here = f"this run uses selector {p.selector}" + (f" with scorer {p.scorer}" if "scorer" in read else "")
    for name in PruningConfig.model_fields:
        if name not in read:
            who = ", ".join(readers[name]) or "nothing"
            unused[f"pruning.{name}"] = f"read by {who}; {here}" if prunes else f"read by {who}; this run does not prune"
    return unused


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys |= _flat_keys(value, dotted + ".") if isinstance(value, dict) else {dotted}
    return keys


def check_settings_used(cfg: PretrainConfig, command_line: dict, recipe_tree: dict, recipe: str = "recipe") -> None:
    """Refuse a command-line setting that cannot affect the run; warn, once, about such recipe settings.
    Defaults nobody wrote say nothing."""
    unused = unused_settings(cfg)
    given = _flat_keys(command_line)
    refused = [f"{key} ({why})" for key, why in unused.items() if key in given]
    if refused:
        raise ConfigError("These settings would have no effect on this run: " + "; ".join(refused) + ".")
    from_recipe = sorted(key for key in unused if key in _flat_keys(recipe_tree))
    if from_recipe:
        print(f"warning: {recipe} sets {', '.join(from_recipe)}, which this run does not read "
              f"({unused[from_recipe[0]]}{'; ...' if len(from_recipe) > 1 else ''})", file=sys.stderr)


def describe_options(model: type[BaseModel] = PretrainConfig) -> str:
    """One line per option, for --help, with what reads the settings that are not always read."""
    readers = pruning_readers()
    rows = []
    for section_name, section_field in model.model_fields.items():
        section = section_field.annotation
        for name, field in section.model_fields.items():
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            if choices:
                annotation = "one of " + " | ".join(map(str, choices))
            elif get_origin(field.annotation) is Union:
                annotation = " or ".join(getattr(a, "__name__", str(a)) for a in get_args(field.annotation))
            else:
                annotation = getattr(field.annotation, "__name__", str(field.annotation))
            doc = f"  {field.description}" if field.description else ""
            key = f"{section_name}.{name}"
            if key in READ_ONLY_WHEN:
                decider, values = READ_ONLY_WHEN[key]
                doc += f"  (read when {decider} is {' | '.join(map(str, values))})"
            elif section_name == "pruning" and readers.get(name):
                doc += f"  (read by: {', '.join(readers[name])})"
            rows.append(f"  {key} = {field.default!r}   [{annotation}]{doc}")
    return "\n".join(rows)
