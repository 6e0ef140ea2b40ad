"""Commands printed for a user to run next (resume a run, probe it, upload it), spelled so that they run as
printed in the shell the user is in: with the interpreter that runs this one, which after ``make setup`` is the
project's ``.venv/bin/python``, not a bare ``python`` that may have no torch."""

from __future__ import annotations

import os
import shlex
import shutil
import sys


def python() -> str:
    """This interpreter, as it can be typed here: ``python`` where that is the one on PATH (an activated venv),
    else its path relative to the working folder when it lies under it (``.venv/bin/python``), else absolute."""
    exe = os.path.abspath(sys.executable)
    on_path = shutil.which("python")
    if on_path and os.path.abspath(on_path) == exe:
        return "python"
    relative = os.path.relpath(exe)
    if relative.startswith(".."):
        return shlex.quote(exe)
    return shlex.quote(relative if os.sep in relative else os.path.join(".", relative))  # never a bare name


def module(name: str, *args: object) -> str:
    """``python -m name args...``, runnable as printed (each argument quoted where the shell needs it)."""
    return " ".join([python(), "-m", name, *(shlex.quote(str(a)) for a in args)])
