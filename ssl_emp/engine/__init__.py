"""The training engine: the loop (``trainer``) and the groups of parts it takes (``parts``), what a run reports
each epoch and at its end (``run_report``), what its checkpoint holds (``run_state``), clean-image embeddings
(``embed``), run directories and resume rules (``run_dir``), the optimizer and schedule (``optim``), the online
kNN monitor, and stopping on a signal (``interrupt``). Nothing here reads a config: ``ssl_emp.build`` makes the
parts from one and ``ssl_emp.build.pretrain`` runs them."""

from ssl_emp.checkpoint import CheckpointError, load_checkpoint
from ssl_emp.engine.interrupt import RunInterrupted
from ssl_emp.engine.parts import RunCounters, RunSettings, Schedules, TrainParts
from ssl_emp.engine.run_dir import RunDirError
from ssl_emp.engine.run_report import PretrainResult
from ssl_emp.engine.trainer import Pretrainer
from ssl_emp.pruning import PlanMismatchError  # what a run stops with when its ranks planned differently

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "PlanMismatchError",
    "PretrainResult",
    "Pretrainer",
    "RunDirError",
    "RunCounters",
    "RunInterrupted",
    "RunSettings",
    "Schedules",
    "TrainParts",
]
