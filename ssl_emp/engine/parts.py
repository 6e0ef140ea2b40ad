"""What a :class:`~ssl_emp.engine.Pretrainer` takes, in three groups made elsewhere (``ssl_emp.build`` makes them
from a config; a script can make them by hand), and the counters it keeps, which the checkpoint saves and the
report and dashboard read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ssl_emp.distributed import DistContext
from ssl_emp.pruning import Pruner


@dataclass
class TrainParts:
    """What a step trains with. ``source`` yields ``(indices, uint8 images)`` per list of index batches (an
    :class:`~ssl_emp.data.ImageBank`, or a folder streamed from disk); ``method`` is the model whose state is
    saved; ``forward`` is what steps call (the method wrapped by DDP or ``torch.compile``; default the method
    itself); ``normalize`` is the clean view the pruner's embeddings are made of; ``monitor`` (optional) scores
    the backbone at the end of some epochs (the online kNN monitor)."""

    source: Any
    views: nn.Module
    method: nn.Module
    optimizer: torch.optim.Optimizer
    pruner: Pruner
    forward: Optional[nn.Module] = None
    normalize: Optional[nn.Module] = None
    monitor: Optional[Callable[[nn.Module], dict]] = None

    def __post_init__(self):
        self.forward = self.method if self.forward is None else self.forward


@dataclass(frozen=True)
class Schedules:
    """How the optimizer's knobs follow the run: each maps the run's progress, in epochs of planned compute
    (:func:`~ssl_emp.engine.optim.compute_progress`), to a value. ``weight_decay`` (optional) sets the decayed
    parameters' weight decay; ``clip_grad`` (optional) caps the gradients' global norm."""

    lr: Callable[[float], float]
    weight_decay: Optional[Callable[[float], float]] = None
    clip_grad: Optional[float] = None


@dataclass(frozen=True)
class RunSettings:
    """Where and how long a run goes. ``max_forwards`` ends the run once that many sample-forwards are done, its
    last epoch cut short (the equal-compute baseline). ``nonfinite``: ``"stop"`` or ``"skip"`` a step whose loss
    is not finite. ``run_config`` and ``data_info`` are saved in each checkpoint, so evaluation can rebuild the
    backbone."""

    run_dir: Path
    epochs: int
    batch_size: int
    device: torch.device = torch.device("cpu")
    ctx: DistContext = DistContext()
    seed: int = 0
    amp: bool = True
    channels_last: bool = True
    nonfinite: str = "stop"
    checkpoint_every: int = 10
    log_every: int = 10
    max_forwards: Optional[int] = None
    run_config: dict = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)
    data_files: Optional[str] = None  # a digest of a folder's files, in order (run_state.files_digest)

    def finished(self, counts: "RunCounters") -> bool:
        """Whether a run that has got to ``counts`` is done: all its epochs, or its compute budget, spent."""
        spent = self.max_forwards is not None and counts.forwards_spent >= self.max_forwards
        return counts.epoch >= self.epochs or spent

    @property
    def memory_format(self) -> torch.memory_format:
        cuda_channels_last = self.device.type == "cuda" and self.channels_last
        return torch.channels_last if cuda_channels_last else torch.contiguous_format


@dataclass
class RunCounters:
    """How far a run has got; saved in each checkpoint."""

    epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0  # sample-forwards trained
    skipped_steps: int = 0  # non-finite steps skipped (train.nonfinite=skip)
    unreadable_skips: int = 0  # planned samples not trained because their file could not be read
    embedding_seconds: float = 0.0  # spent making the pruner's clean-image embeddings

    @property
    def forwards_spent(self) -> int:
        """Planned sample-forwards used up: those trained, and those lost to unreadable files (so the schedule and
        the compute budget still end where planned)."""
        return self.samples_seen + self.unreadable_skips

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, saved: dict) -> None:
        for name, value in saved.items():
            if name in self.__dataclass_fields__:
                setattr(self, name, value)
