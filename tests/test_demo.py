"""``make demo``'s script: both runs, the achieved rate, the time saved and the floor, as a user sees them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.kernels("the demo's printed accuracies clear their floors on any kernel")
def test_demo_prints_rate_time_saved_and_the_floor(tmp_path):
    """As ``make demo`` runs it: its default arguments (the embedded recipe, rate 0.7), from a fresh folder."""
    repo = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(repo / "examples" / "pruning_demo.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run |") and any(line.startswith("| pruned (") for line in table)
    assert any(line.startswith("| random-init floor |") for line in table)
    pruned = next(line for line in table if line.startswith("| pruned ("))
    assert float(pruned.split("|")[2]) == pytest.approx(0.7, abs=0.005)
    assert "Pruning at 0.7 skipped 70.0% of the sample-forwards and saved" in done.stdout
    assert (tmp_path / "runs" / "demo-pruned" / "checkpoints" / "last.pt").is_file()
