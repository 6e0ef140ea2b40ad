"""``make demo``'s script: both runs, the achieved rate, the time saved and the floor, as a user sees them."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_prints_rate_time_saved_and_the_floor(tmp_path):
    done = subprocess.run([sys.executable, "examples/pruning_demo.py", "--epochs", "20", "--rate", "0.5",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run |") and any(line.startswith("| pruned (") for line in table)
    assert any(line.startswith("| random-init floor |") for line in table)
    pruned = next(line for line in table if line.startswith("| pruned ("))
    assert float(pruned.split("|")[2]) == pytest.approx(0.5, abs=0.005)
    assert "Pruning at 0.5 skipped 50.0% of the sample-forwards and saved" in done.stdout
