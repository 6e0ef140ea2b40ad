"""Checkpoints: written atomically, read without executing code.

A checkpoint is a plain dict of tensors and builtins (so ``torch.load`` runs
with ``weights_only=True``). It is written to a temporary file in the same
folder, fsynced, then renamed over the old one: a crash leaves either the old
checkpoint or the new one, never half of either.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

FORMAT = "ssl_emp.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or not one of ours."""


def atomic_save(obj: Any, path: Union[str, Path]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at '{path}'. Pass a .pt file or a run directory that has checkpoints/last.pt."
        )
    return path


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict:
    path = resolve_checkpoint_path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (a pickle in old versions); anything else would get torch's page-long message
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):
        raise CheckpointError(
            f"'{path}' is not a checkpoint (not a file torch.save wrote). Pass a run directory "
            "or its checkpoints/last.pt."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = next((line for line in lines if "Unpickler error" in line), lines[0])[:300]  # not torch's page
        raise CheckpointError(
            f"Checkpoint '{path}' holds objects other than tensors and plain values; "
            f"it was not loaded, since that could run code ({reason})."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation, OSError) as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt or truncated and cannot be read "
            f"({type(exc).__name__}: {exc}). An earlier epoch_*.pt beside it may still be good."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an ssl_emp checkpoint (expected format '{FORMAT}').")
    return ckpt


def backbone_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights out of a method's state dict (keys without the ``backbone.`` prefix)."""
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}
