"""Stopping a run safely: SIGINT (Ctrl-C), SIGTERM (what SLURM and Kubernetes send to preempt) and SIGUSR1 (what
SLURM sends ahead of a time limit with ``--signal=USR1@SECONDS``) ask the loop to stop after the current step; it
then saves where it is inside the epoch and raises :class:`RunInterrupted`. A second signal exits at once
(checkpoints are written atomically, so none is left half-written).

Under DDP every rank must stop at the same step (a rank that stopped alone would leave the others waiting in a
collective), so the ranks agree each step: one all-reduce of a one-element CPU tensor, on a gloo group (the
default group when it is gloo, else one made for this), so no device sync is added to the step.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from ssl_emp import commands
from ssl_emp.distributed import DistContext
from ssl_emp.pruning import EpochPlan

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, epoch: int, step: int, run_dir: Path, is_main: bool = True):
        self.signum, self.epoch, self.step, self.run_dir, self.is_main = signum, epoch, step, run_dir, is_main
        self.exit_code = 128 + signum
        # SIGUSR1 is a scheduler's warning that the job's time is up: its script requeues the job on this exit code.
        requeue = (
            f" (exit code {self.exit_code}: requeue the job; the same command with run.resume=auto goes on)"
            if signum == signal.SIGUSR1
            else ""
        )
        super().__init__(
            f"interrupted at epoch {epoch}, step {step}; resume with: "
            f"{commands.module('ssl_emp.pretrain', '--resume', run_dir)}{requeue}"
        )


class StopSignals:
    """While entered, SIGINT, SIGTERM and SIGUSR1 set a flag that :meth:`requested` reads (agreed on by every rank); a
    second signal raises ``SystemExit(128 + signal)``. Handlers can only be set from the main thread; elsewhere
    signals keep their usual effect."""

    def __init__(self, ctx: DistContext = DistContext()):
        self.ctx, self.signum, self._previous = ctx, 0, {}
        self.group = None
        if ctx.enabled and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")  # collective: every rank builds one

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise SystemExit(128 + signum)
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving (send it again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def requested(self) -> int:
        """The signal to stop on (0: none); the same value, at the same step, on every rank."""
        if not self.ctx.enabled:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        self.signum = self.signum or int(flag)
        return int(flag)


@dataclass
class EpochPosition:
    """Where a run stopped inside an epoch: the epoch's plan (it depends on the score table at the epoch's start,
    since changed, so it is saved rather than rebuilt), the steps done of it, and the epoch's loss so far."""

    steps_done: int
    plan: EpochPlan
    loss_sum: torch.Tensor
    trained: int
    steps: int = 0  # the epoch's steps in all
    signum: int = 0  # the signal every rank agreed to stop on at steps_done (0: none)

    @property
    def resumed(self) -> tuple[int, torch.Tensor, int]:
        """What the epoch goes on from: the steps done, the loss summed so far, and the samples it sums."""
        return self.steps_done, self.loss_sum, self.trained

    @property
    def inside(self) -> bool:
        """Stopped before the epoch's last step."""
        return self.steps_done < self.steps

    def state_dict(self) -> dict:
        return {
            "steps_done": self.steps_done,
            "indices": self.plan.indices.cpu(),
            "weights": None if self.plan.weights is None else self.plan.weights.cpu(),
            "info": dict(self.plan.info),
            "loss_sum": self.loss_sum.detach().cpu(),
            "trained": self.trained,
        }

    @classmethod
    def from_state(cls, state: Optional[dict], device: torch.device) -> Optional["EpochPosition"]:
        if not state:
            return None
        plan = EpochPlan(state["indices"], state["weights"], state["info"])
        return cls(state["steps_done"], plan, state["loss_sum"].to(device), state["trained"])
