"""Loading a run's settings: a YAML recipe plus ``dotted.key=value`` overrides whose values are parsed as YAML
(``train.epochs=5``, ``augment.hflip_p=0``, ``run.name=demo``). Validation is pydantic's; its errors are
rewritten into one paragraph that names the offending key, the closest valid key and all valid keys there.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ValidationError

from ssl_emp.config.schema import ConfigError, DataConfig, PretrainConfig, RunConfig
from ssl_emp.config.unused import check_settings_used

# The recipe a run without --config uses (configs/default.yaml, shipped in the package through a link): the one
# source of a plain run's settings; the schema's defaults fill the keys it leaves out, as for any recipe.
DEFAULT_RECIPE = Path(__file__).with_name("default.yaml")
# ... and a run on an image folder (configs/folder.yaml): natural-image augmentations, not the digits' ones.
FOLDER_RECIPE = Path(__file__).with_name("folder.yaml")


def recipe_for(overrides: list[str] = ()) -> Path:
    """The recipe a run without ``--config`` uses: the folder recipe where the overrides name an image folder
    (``data.name=imagefolder``, as ``--data FOLDER`` gives), else the default (digits)."""
    data = parse_overrides(list(overrides)).get("data", {})
    return FOLDER_RECIPE if isinstance(data, dict) and data.get("name") == "imagefolder" else DEFAULT_RECIPE


def describe_recipe(cfg: PretrainConfig, path: Union[str, Path]) -> str:
    """One line naming the recipe a run read and the choices that shape it most."""
    a, m = cfg.augment, cfg.model
    model = m.backbone + (f" width {m.width}" if m.backbone == "small_cnn" else "")
    return (
        f"recipe {path}: {cfg.method.name}, {model}, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
        f"crops down to {a.crop_scale_min:g}, flip {a.hflip_p:g}"
    )


def _section_at(model: type[BaseModel], path: tuple[Union[str, int], ...]) -> Optional[type[BaseModel]]:
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _origin(key: str, overrides: dict[str, str], source: str) -> str:
    """Where a bad setting came from: the override(s) that set it (or something inside or above it), else the
    recipe."""
    given = [
        item
        for dotted, item in overrides.items()
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".")
    ]
    return "override " + ", ".join(given) if given else source


def _explain(
    exc: ValidationError, model: type[BaseModel], source: str, overrides: Optional[dict[str, str]] = None
) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        origin = _origin(key, overrides or {}, source)
        if err["type"] == "extra_forbidden":
            section = _section_at(model, loc[:-1])
            valid = sorted(section.model_fields) if section else []
            prefix = ".".join(str(p) for p in loc[:-1])
            full = [f"{prefix}.{v}" if prefix else v for v in valid]
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" Did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?" if close else ""
            lines.append(f"unknown key '{key}' ({origin}).{hint} Valid keys here: {', '.join(full)}.")
        else:
            given = err.get("input")
            lines.append(f"'{key}' = {given!r} ({origin}): {err['msg']}.")
    return ConfigError("Invalid configuration: " + " ".join(lines))


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
        raise ConfigError(
            f"Config file '{path}' does not exist. Recipes live in configs/ (for example configs/default.yaml)."
        )
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections, not {type(tree).__name__}.")
    return tree


DATASETS = get_args(DataConfig.model_fields["name"].annotation)


def data_overrides(data: Union[str, Path]) -> list[str]:
    """The overrides that name the data to pretrain on: a dataset by name (``digits``, ``cifar10``, ...) or a folder
    of images (``imagefolder`` at that root); what ``--data`` and ``ssl_emp.train(data=...)`` take."""
    if str(data) in DATASETS:
        return [f"data.name={data}"]
    if Path(data).is_dir():
        return ["data.name=imagefolder", f"data.root={json.dumps(str(data))}"]  # JSON is YAML: any path parses
    raise ConfigError(f"data={str(data)!r} is neither a dataset name ({', '.join(DATASETS)}) nor a folder of images.")


def build_config(model: type[BaseModel], tree: dict, overrides: list[str] = (), source: str = "config"):
    merged = _deep_merge(tree, parse_overrides(list(overrides)))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        given = {item.split("=", 1)[0].strip(): item for item in overrides}
        raise _explain(exc, model, source, given) from None


def load_run_config(run_dir: Union[str, Path], overrides: list[str] = ()) -> PretrainConfig:
    """A run folder's saved settings (its ``config.yaml``) plus ``overrides``, set to resume that run; as on a
    recipe, an override the run would not read is refused. What ``--resume RUN_DIR`` and
    ``ssl_emp.train(out=RUN_DIR, resume=True)`` run."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"Cannot resume '{run_dir}': it has no config.yaml; is it a run folder? (run.resume=auto "
            "with its run.name resumes a run where there is one and starts it otherwise)"
        )
    located = [f"run.out_dir={json.dumps(str(run_dir.parent))}", f"run.name={json.dumps(run_dir.name)}"]
    cfg = build_config(PretrainConfig, read_yaml(saved), [*overrides, *located, "run.resume=true"], source=str(saved))
    check_settings_used(cfg, parse_overrides(list(overrides)), {})
    return cfg


def load_pretrain_config(path: Optional[Union[str, Path]] = None, overrides: list[str] = ()) -> PretrainConfig:
    """A recipe (default: :data:`DEFAULT_RECIPE`) plus command-line overrides; a setting that cannot affect the
    run is refused when the command line gives it, and warned about (one line on stderr) when the recipe does.

    Without a recipe, ``run.resume=auto`` on a run that has a checkpoint goes on with the settings the run began
    with (its ``config.yaml``), as ``--resume RUN`` does: a requeued job must not pick up a default recipe that
    has changed since, or that another kind of data now chooses."""
    if path is None:
        asked = parse_overrides(list(overrides)).get("run", {})
        if asked.get("resume") == "auto" and asked.get("name"):
            run_dir = Path(str(asked.get("out_dir", RunConfig.model_fields["out_dir"].default))) / str(asked["name"])
            if (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "config.yaml").is_file():
                return load_run_config(run_dir, [o for o in overrides if not o.startswith("run.resume=")])
    path = path or recipe_for(overrides)
    tree = read_yaml(path)
    cfg = build_config(PretrainConfig, tree, overrides, source=str(path))
    check_settings_used(cfg, parse_overrides(list(overrides)), tree, recipe=str(path))
    return cfg
