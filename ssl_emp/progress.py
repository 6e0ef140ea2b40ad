"""Progress a person can follow: a bar in a terminal; plain lines when output goes to a file (nohup, SLURM, CI),
one per epoch and one every ``every_seconds`` within a long epoch, each with elapsed time and an ETA.

    progress = Progress("epoch", total=20, images=expected_forwards)
    progress.start(epoch, steps)          # each epoch
    progress.step(step, images, loss)     # each step (loss: a device tensor, read only when a line is due)
    progress.line("epoch 3/20  loss ...", always=True)
    progress.close()                      # or: with Progress(...) as progress:

``mode`` is "auto" (a bar when the stream is a terminal, else lines), "bar", "lines" or "off". The evaluation
commands use the same class for their own loops.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from tqdm import tqdm


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``-:--:--`` when unknown)."""
    if not seconds >= 0 or seconds == float("inf"):
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def resolve_mode(mode: str, stream: TextIO) -> str:
    if mode not in ("auto", "bar", "lines", "off"):
        raise ValueError(f"progress mode '{mode}': use auto, bar, lines or off")
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


def mode_for(show_progress: Optional[bool], visible: bool = True) -> str:
    """The mode a ``show_progress`` argument asks for: None decides by the terminal, False prints nothing (nor
    does a process that is not ``visible``: a DDP rank other than 0)."""
    if not visible:
        return "off"
    return "auto" if show_progress is None else ("bar" if show_progress else "off")


class Progress:
    """Progress over ``total`` units (epochs) of ``images`` work items in all (``done`` of them already done, as
    on resume); ``unit`` names a unit in the lines ("epoch")."""

    def __init__(
        self,
        unit: str,
        total: int,
        images: int,
        done: int = 0,
        *,
        mode: str = "auto",
        every_seconds: float = 60.0,
        stream: Optional[TextIO] = None,
        item: str = "img",
        unit_lines: bool = True,
    ):
        self.stream = stream or sys.stdout
        self.mode = resolve_mode(mode, self.stream)
        self.unit, self.total, self.item, self.every_seconds = unit, total, item, every_seconds
        self.unit_lines = unit_lines  # the caller prints a line per unit, so none is due at a unit's last step
        self.images, self.done = images, min(done, images)
        self.bar = tqdm(
            total=images,
            initial=self.done,
            unit=item,
            unit_scale=True,
            dynamic_ncols=True,
            file=self.stream,
            disable=self.mode != "bar",
            leave=False,
        )
        self.started = self.last_line = time.perf_counter()
        self.session = 0  # items done by this process (the rate behind the ETA)
        self.current, self.steps, self.unit_started, self.unit_items = 0, 0, self.started, 0

    def start(self, current: int, steps: int) -> None:
        """Unit ``current`` (1-based) begins, in ``steps`` steps; the bar shows it (never a stale one)."""
        self.current, self.steps = current, steps
        self.unit_started, self.unit_items = time.perf_counter(), 0
        self.bar.set_description(f"{self.unit} {current}/{self.total}", refresh=False)

    def step(self, step: int, items: int, loss=None, postfix: Optional[dict] = None) -> None:
        """Step ``step`` (1-based) of the current unit trained ``items``; in line mode a line is printed when
        ``every_seconds`` have passed since the last one (the only time ``loss`` is read from the device)."""
        self.session += items
        self.done += items
        self.unit_items += items
        self.bar.update(items)
        if postfix and self.mode == "bar":
            self.bar.set_postfix(postfix, refresh=False)
        now = time.perf_counter()
        due = now - self.last_line >= self.every_seconds and (step < self.steps or not self.unit_lines)
        if self.mode == "lines" and due:
            loss_text = f"  loss {float(loss):.4f}" if loss is not None else ""
            rate = self.unit_items / max(now - self.unit_started, 1e-9)
            self.line(
                f"{self.unit} {self.current}/{self.total}  step {step}/{self.steps}{loss_text}  "
                f"{rate:.0f} {self.item}/s"
            )

    def timing(self) -> str:
        now = time.perf_counter()
        rate = self.session / (now - self.started) if now > self.started else 0.0
        eta = (self.images - self.done) / rate if rate > 0 else float("nan")
        return f"elapsed {clock(now - self.started)}  eta {clock(max(eta, 0.0))}"

    def line(self, text: str, always: bool = False) -> None:
        """One line, with elapsed time and ETA: printed in line mode, and in bar mode when ``always``."""
        if self.mode == "off" or (self.mode == "bar" and not always):
            return
        self.write(f"{text}  {self.timing()}")
        self.last_line = time.perf_counter()

    def write(self, text: str) -> None:
        """A line that is not progress (a note, a result): above the bar, or plain; flushed, for log files."""
        if self.mode == "bar":
            self.bar.write(text, file=self.stream)
        elif self.mode == "lines":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
