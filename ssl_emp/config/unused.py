"""Settings that cannot affect a run: refused on the command line, warned about in a recipe, and described in
``--help`` with what reads them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

from pydantic import BaseModel

from ssl_emp import pruning
from ssl_emp.config.schema import ConfigError, PretrainConfig, PruningConfig
from ssl_emp.methods import settings as method_settings

# Settings read only for some values of another setting (pruning's are declared by each scorer and selector,
# the method section's by each method's settings, ``_method_rows``). A value ending in "*" stands for every value
# that starts with what precedes it.
LOCAL_CROPS = ("local_crops", "local_crop_size", "local_crop_scale_min", "local_crop_scale_max")


def _method_rows() -> dict:
    """Each method setting is read when a method that declares it is chosen; the local-crop settings when the
    chosen method takes local crops."""
    rows = {f"method.{name}": ("method.name", tuple(methods)) for name, methods in method_settings.readers().items()}
    takers = tuple(method_settings.inputs_readers("local_crops"))
    return {**rows, **{f"augment.{name}": ("method.name", takers) for name in LOCAL_CROPS}}


READ_ONLY_WHEN = {
    **_method_rows(),
    "model.width": ("model.backbone", ("small_cnn",)),
    "model.cifar_stem": ("model.backbone", ("resnet18", "resnet34", "resnet50")),
    "model.timm_kwargs": ("model.backbone", ("timm/*",)),
    "model.pretrained_file": ("model.backbone", ("timm/*",)),
    "run.extend": ("run.resume", (True, "auto")),
    "data.workers": ("data.in_memory", (False,)),
    "tracking.images_every": ("tracking.wandb", ("auto", "online", "offline")),
    "tracking.checkpoint_artifact": ("tracking.wandb", ("auto", "online", "offline")),
}
SCHEDULE = ("rate", "warmup_epochs", "anneal")  # read whenever the run prunes


def _get(cfg: BaseModel, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _matches(value, values: tuple) -> bool:
    return any(value == v or (isinstance(v, str) and v.endswith("*") and str(value).startswith(v[:-1])) for v in values)


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
        if not _matches(_get(cfg, decider), values):
            unused[key] = (
                f"read only when {decider} is {' or '.join(map(str, values))}, and here it is {_get(cfg, decider)}"
            )
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
            unused[f"pruning.{name}"] = (
                f"read by {who}; {here}" if prunes else f"read by {who}; this run does not prune"
            )
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
    # A mapping setting (model.timm_kwargs) is given by its own keys too (model.timm_kwargs.patch_size=4).
    given |= {key for key in unused for g in given if g.startswith(key + ".")}
    refused = [f"{key} ({why})" for key, why in unused.items() if key in given]
    if refused:
        raise ConfigError("These settings would have no effect on this run: " + "; ".join(refused) + ".")
    in_recipe = _flat_keys(recipe_tree)
    from_recipe = sorted(key for key in unused if key in in_recipe or any(k.startswith(key + ".") for k in in_recipe))
    if from_recipe:
        print(
            f"warning: {recipe} sets {', '.join(from_recipe)}, which this run does not read "
            f"({unused[from_recipe[0]]}{'; ...' if len(from_recipe) > 1 else ''})",
            file=sys.stderr,
        )


# describe_options()' text, read by `python -m ssl_emp.pretrain --help` without importing this package (and so
# torch); rewrite it with write_options_help() when the options change (a test says when).
OPTIONS_HELP = Path(__file__).with_name("options.txt")


def write_options_help() -> Path:
    OPTIONS_HELP.write_text(describe_options() + "\n")
    return OPTIONS_HELP


def _recipe_value(recipe: str, key: str):
    """The value the shipped recipe ``recipe`` (default.yaml, folder.yaml) sets at ``section.name``, or ``_UNSET``."""
    import yaml

    tree = yaml.safe_load(Path(__file__).with_name(recipe).read_text()) or {}
    section, name = key.split(".", 1)
    return (tree.get(section) or {}).get(name, _UNSET)


_UNSET = object()


def describe_options(model: type[BaseModel] = PretrainConfig) -> str:
    """One line per option, for --help: the value a plain run uses (the default recipe's, else the schema's), the
    folder recipe's where it differs (a run on ``--data FOLDER``), and what reads the settings not always read."""
    readers = pruning_readers()
    rows = []
    for section_name, section_field in model.model_fields.items():
        section = section_field.annotation
        for name, field in section.model_fields.items():
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            if choices:
                annotation = "one of " + " | ".join(map(str, choices))
            elif get_origin(field.annotation) is Union:
                annotation = " or ".join(
                    " | ".join(map(str, get_args(a))) if get_origin(a) is Literal else getattr(a, "__name__", str(a))
                    for a in get_args(field.annotation)
                )
            else:
                annotation = getattr(field.annotation, "__name__", str(field.annotation))
            doc = f"  {field.description}" if field.description else ""
            key = f"{section_name}.{name}"
            if key in READ_ONLY_WHEN:
                decider, values = READ_ONLY_WHEN[key]
                doc += f"  (read when {decider} is {' | '.join(map(str, values))})"
            elif section_name == "pruning" and readers.get(name):
                doc += f"  (read by: {', '.join(readers[name])})"
            schema = field.get_default(call_default_factory=True)
            plain, folder = (_recipe_value(recipe, key) for recipe in ("default.yaml", "folder.yaml"))
            plain, folder = (schema if value is _UNSET else value for value in (plain, folder))
            on_folder = f"  [--data FOLDER: {folder!r}]" if folder != plain else ""
            own = f"  [a --config that leaves it out: {schema!r}]" if schema != plain else ""
            rows.append(f"  {key} = {plain!r}{on_folder}{own}   [{annotation}]{doc}")
    return "\n".join(rows)
