"""Metrics go to two places: ``metrics.jsonl`` in the run directory (always) and W&B (when enabled).

W&B never needs a network or an account: with no API key configured the
default mode is offline, and any failure to start it is reported and training
goes on without it.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> the WANDB_MODE environment variable if set, else online with a key, else offline."""
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if wandb_api_key_configured() else "offline"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Tracker:
    """Logs dictionaries of scalars; one instance per job (pretraining, probe, ...)."""

    def __init__(self, run_dir: Path, *, mode: str, project: str, entity: Optional[str], name: str,
                 config: dict, job_type: str, group: Optional[str] = None, run_id: Optional[str] = None,
                 metrics_file: str = "metrics.jsonl"):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / metrics_file
        self._metrics = open(self.metrics_path, "a", buffering=1)
        self.mode = resolve_wandb_mode(mode)
        self.wandb_run = None
        if self.mode != "disabled":
            try:
                import wandb

                self.wandb_run = wandb.init(
                    project=project, entity=entity, name=name, config=config, job_type=job_type,
                    group=group, id=run_id, resume="allow" if run_id else None, mode=self.mode,
                    dir=str(self.run_dir), settings=wandb.Settings(silent=True, console="off"))
                # Representation quality against compute: the monitor's x-axis is sample-forwards, not steps.
                self.wandb_run.define_metric("pruning/sample_forwards")
                self.wandb_run.define_metric("monitor/*", step_metric="pruning/sample_forwards")
            except Exception as exc:  # noqa: BLE001 - W&B trouble must never stop training
                warnings.warn(f"W&B could not start ({type(exc).__name__}: {exc}); continuing without it. "
                              "Metrics are still written to " + str(self.metrics_path), stacklevel=2)
                self.mode = "disabled"

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        record = {k: _jsonable(v) for k, v in metrics.items()}
        self._metrics.write(json.dumps({"time": round(time.time(), 3), "step": step, **record}) + "\n")
        if self.wandb_run is not None:
            try:
                self.wandb_run.log(self._for_wandb(metrics), step=step)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"W&B log failed ({exc}); continuing.", stacklevel=2)

    @staticmethod
    def _for_wandb(metrics: dict[str, Any]) -> dict[str, Any]:
        """Count lists become W&B histograms (``hist[k]`` = how many samples have value k)."""
        import wandb

        out = {}
        for key, value in metrics.items():
            if isinstance(value, list):
                edges = [k - 0.5 for k in range(len(value) + 1)]
                value = wandb.Histogram(np_histogram=(value, edges)) if value else None
            if value is not None:
                out[key] = value
        return out

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            for key, value in values.items():
                self.wandb_run.summary[key] = value

    def finish(self) -> None:
        self._metrics.close()
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"W&B finish failed ({exc}).", stacklevel=2)


class NullTracker:
    """What ranks other than 0 log to under DDP: nothing."""

    wandb_run = None

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass
