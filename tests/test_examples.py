"""The two library examples run as users run them, on real data (scikit-learn's digits as PNG files read by
torchvision's ImageFolder), and prune at the rate they ask for."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("script", ["examples/prune_plain_pytorch.py", "examples/prune_lightning.py"])
def test_example_prunes_at_its_rate_in_a_users_own_loop(script, tmp_path):
    done = subprocess.run([sys.executable, script, "--epochs", "4", "--rate", "0.3", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "achieved rate 0.300 (requested 0.3)" in done.stdout
    if "lightning" in script:  # the callback's line per epoch (Lightning's progress bar shares stdout)
        assert done.stdout.count("sample-forwards so far") == 4
    else:  # full warm-up epoch, two pruned epochs, full annealing epoch
        epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
        assert [line.split(": trained ")[1].split(" ")[0] for line in epochs] == [
            "1797/1797", "719/1797", "719/1797", "1797/1797"]
