"""Metrics go to two places: ``metrics.jsonl`` in the run directory (always) and W&B (when enabled).

W&B never needs a network or an account: with no API key configured the
default mode is offline, and any failure to start it is reported and training
goes on without it. Besides the scalars, W&B gets the console output (its Logs
tab), pictures every few epochs (``epoch_pictures``) and, if asked, the last
checkpoint as an artifact (``log_checkpoint``).
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional


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


def rewind_metrics(path: Path, step: int) -> None:
    """Drop the lines a resumed run will write again: those past ``step`` (its checkpoint's), logged by the attempt
    that stopped after it, and any line a crash cut short. Without this a resumed run's metrics.jsonl holds those
    steps twice, and its per-step curves double back. Atomic: a crash here leaves the file as it was."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (record.get("step") is None or record["step"] <= step):
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def sync_command(wandb_dir: Path, run_id: str) -> str:
    """``python -m wandb sync`` of every offline folder under ``wandb_dir`` that holds run ``run_id``, oldest first
    (W&B names them ``offline-run-DATE_TIME-ID``)."""
    from ssl_emp import commands

    folders = sorted(Path(wandb_dir).glob(f"offline-run-*-{run_id}"))
    return commands.module("wandb", "sync", *folders)


class Tracker:
    """Logs dictionaries of scalars; one instance per job (pretraining, probe, ...)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        mode: str,
        project: str,
        entity: Optional[str],
        name: str,
        config: dict,
        job_type: str,
        group: Optional[str] = None,
        run_id: Optional[str] = None,
        metrics_file: str = "metrics.jsonl",
        images_every: int = 0,
        rewind_to_step: Optional[int] = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / metrics_file
        if rewind_to_step is not None:
            rewind_metrics(self.metrics_path, rewind_to_step)
        self._metrics = open(self.metrics_path, "a", buffering=1)
        self.mode = resolve_wandb_mode(mode)
        self.images_every = images_every
        self.wandb_run = None
        if self.mode != "disabled":
            try:
                import wandb

                self.wandb_run = wandb.init(
                    project=project,
                    entity=entity,
                    name=name,
                    config=config,
                    job_type=job_type,
                    group=group,
                    id=run_id,
                    resume="allow" if run_id else None,
                    mode=self.mode,
                    dir=str(self.run_dir),
                    settings=wandb.Settings(silent=True, console="wrap"),
                )
                # console "wrap" copies stdout and stderr to the Logs tab; "redirect" (auto's choice) would
                # swap the process's file descriptors, which breaks callers that capture output.
                # Representation quality against compute: the monitor's x-axis is sample-forwards, not steps.
                self.wandb_run.define_metric("pruning/sample_forwards")
                self.wandb_run.define_metric("monitor/*", step_metric="pruning/sample_forwards")
            except Exception as exc:  # noqa: BLE001 - W&B trouble must never stop training
                warnings.warn(
                    f"W&B could not start ({type(exc).__name__}: {exc}); continuing without it. "
                    "Metrics are still written to " + str(self.metrics_path),
                    stacklevel=2,
                )
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

    def describe(self) -> str:
        """One line for the start of a run: the W&B mode, and for an offline run the command that uploads it."""
        if self.wandb_run is None:
            return f"W&B: disabled; metrics go to {self.metrics_path}"
        if self.mode == "offline":
            return f"W&B: offline; to upload this run later: {self.sync_command()}"
        return f"W&B: {self.mode}, {self.wandb_run.url}"

    def sync_command(self) -> str:
        """The command that uploads every offline folder of this run: a resumed run adds one per sitting, all
        with the run's id."""
        return sync_command(Path(self.wandb_run.dir).parent.parent, self.wandb_run.id)

    def epoch_pictures(self, epoch: int, last: bool, make: Callable[[], Any], step: Optional[int] = None) -> None:
        """Every ``images_every`` epochs and at the last, log ``make()``'s pictures (an
        :class:`ssl_emp.engine.dashboard.EpochPictures`): made only when due and W&B is on."""
        if self.wandb_run is None or not self.images_every or not (epoch % self.images_every == 0 or last):
            return
        try:
            self.wandb_run.log(self._pictures_for_wandb(make()), step=step)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never stop training
            warnings.warn(f"W&B pictures failed ({type(exc).__name__}: {exc}); continuing.", stacklevel=2)

    @staticmethod
    def _pictures_for_wandb(pictures) -> dict[str, Any]:
        import wandb

        out = {"views/pairs": wandb.Image(pictures.views.numpy(), caption=pictures.views_caption)}
        table = wandb.Table(columns=["group", "index", "image", "score", "visits", "last_epoch"])
        panels = {}
        for row in pictures.samples:
            caption = f"#{row['index']} score {row['score']:.3g} visits {row['visits']}"
            image = wandb.Image(row["image"].numpy(), caption=caption)
            table.add_data(row["group"], row["index"], image, row["score"], row["visits"], row["last_epoch"])
            panels.setdefault("pruning/" + row["group"].replace(" ", "_"), []).append(image)
        if pictures.samples:
            out["pruning/samples"] = table
        return {**out, **panels}

    def log_image(self, key: str, path: Path) -> None:
        """One picture file (a map, a plot) under ``key``; W&B trouble is a warning, as everywhere here."""
        if self.wandb_run is None:
            return
        try:
            import wandb

            self.wandb_run.log({key: wandb.Image(str(path))})
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never stop the command
            warnings.warn(f"W&B picture failed ({type(exc).__name__}: {exc}); continuing.", stacklevel=2)

    def log_checkpoint(self, path: Path, metadata: Optional[dict] = None) -> None:
        """Upload ``path`` as this run's model artifact (alias ``last``); offline, it is kept for ``wandb sync``."""
        if self.wandb_run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"checkpoint-{self.wandb_run.id}", type="model", metadata=metadata or {})
            artifact.add_file(str(path), name=Path(path).name)
            self.wandb_run.log_artifact(artifact, aliases=["last"])
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"W&B checkpoint artifact failed ({type(exc).__name__}: {exc}); continuing.", stacklevel=2)

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

    def epoch_pictures(self, epoch: int, last: bool, make: Callable[[], Any], step: Optional[int] = None) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass
