"""One call from Python: ``ssl_emp.train(out="runs/mine", data="digits", epochs=5)``.

It builds the same config as ``python -m ssl_emp.pretrain`` (a recipe, then overrides, validated and checked the
same way) and runs :func:`ssl_emp.build.pretrain`. Settings come as ``key=value`` strings, as on the command line
(``overrides=["pruning.rate=0.7"]``), as whole sections (``pruning={"rate": 0.7}``), or by the short names in
:data:`SHORT_NAMES` (``epochs=5``, ``model="resnet18"``, ``method="moco"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch import nn

from ssl_emp.build import pretrain
from ssl_emp.config import PretrainConfig, data_overrides, load_pretrain_config, load_run_config
from ssl_emp.config.schema import ConfigError
from ssl_emp.engine import PretrainResult

# Keyword arguments that name one setting, as lightly-train's and timm's users expect to write them.
SHORT_NAMES = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "model": "model.backbone",
    "method": "method.name",
    "rate": "pruning.rate",
    "wandb": "tracking.wandb",
    "image_size": "data.image_size",
}


@dataclass
class Run:
    """A finished (or resumed and finished) pretraining run."""

    run_dir: Path
    checkpoint: Path
    metrics: dict  # the last epoch's record (loss, pruning, kNN when monitored) and the run's totals
    result: PretrainResult = field(repr=False)

    @cached_property
    def backbone(self) -> nn.Module:
        """The trained backbone, in eval mode on the CPU (read from the checkpoint on first use)."""
        from ssl_emp.export import load_backbone

        return load_backbone(self.checkpoint)


def _data_settings(data: Union[str, Path, dict]) -> list[str]:
    """A dataset name, a folder of images (``imagefolder``), or the data section as a dict."""
    return _flatten("data", data) if isinstance(data, dict) else data_overrides(data)


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flatten(f"{prefix}.{key}", sub)]
    return [f"{prefix}={json.dumps(str(value) if isinstance(value, Path) else value)}"]  # JSON is YAML


def _keyword_settings(settings: dict[str, Any]) -> list[str]:
    sections = PretrainConfig.model_fields
    out = []
    for key, value in settings.items():
        if isinstance(value, dict) and key in sections:
            out += _flatten(key, value)
        elif key in SHORT_NAMES:
            out += _flatten(SHORT_NAMES[key], value)
        else:
            raise ConfigError(
                f"train() got an unknown keyword '{key}'. Give a section as a dict "
                f"({', '.join(sections)}), one of {', '.join(SHORT_NAMES)}, or overrides=['a.b=value']."
            )
    return out


def train(
    out: Optional[Union[str, Path]] = None,
    data: Optional[Union[str, Path, dict]] = None,
    *,
    config: Optional[Union[str, Path]] = None,
    overrides: Sequence[str] = (),
    resume: Union[bool, str] = False,
    show_progress: Optional[bool] = None,
    **settings: Any,
) -> Run:
    """Pretrain and return the run: its folder, final metrics and (``run.backbone``) the backbone.

    ``out``: the run's folder (default ``runs/<recipe>-<timestamp>``); ``data``: a dataset name (``digits``,
    ``cifar10``, ...), a folder of images (read at its images' size unless ``image_size`` is given), or the data
    section as a dict (``{"name": "cifar10", "root": ...}``); ``config``: a recipe (YAML); ``overrides``:
    ``key=value`` strings; ``settings``: sections as dicts or :data:`SHORT_NAMES`. ``resume=True`` continues the run
    in ``out`` from its last checkpoint with its saved settings, plus any given; ``resume="auto"`` continues it with
    these settings if it has a checkpoint, and starts it otherwise (a script that may be run again after a crash).
    Bad settings raise :class:`ssl_emp.config.ConfigError`.
    """
    if resume not in (True, False, "auto"):
        raise ConfigError(f"resume={resume!r}: give True, False or 'auto'.")
    given = [*(_data_settings(data) if data is not None else []), *_keyword_settings(settings), *overrides]
    if out is not None:
        given += [*_flatten("run.out_dir", str(Path(out).parent)), *_flatten("run.name", Path(out).name)]
    elif resume:
        raise ConfigError(f"resume={resume!r} needs out=, the folder of the run to continue.")
    if resume is True:
        cfg = load_run_config(out, given)
    else:
        cfg = load_pretrain_config(config, [*given, *(["run.resume=auto"] if resume == "auto" else [])])
    result = pretrain(cfg, recipe=Path(config).stem if config else "run", show_progress=show_progress)
    last = {k: v for k, v in (result.history[-1] if result.history else {}).items() if not isinstance(v, list)}
    metrics = {
        **last,
        "final_loss": result.final_loss,
        "epochs": result.epochs_done,
        "steps": result.global_step,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "pruning/achieved_rate": result.achieved_rate,
        "pruning/sample_forwards": result.sample_forwards,
    }
    return Run(result.run_dir, result.checkpoint, metrics, result)
