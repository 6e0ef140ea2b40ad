"""Every example as a user first runs it: with its default arguments, in a fresh folder, on real data
(scikit-learn's digits; the pruning examples write them as PNG files read by torchvision's ImageFolder). A missing
argument gets the usage line and a rate the epochs cannot reach the one-line refusal, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _run(script: str, *args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", ["prune_plain_pytorch.py", "prune_lightning.py"])
def test_pruning_example_runs_with_its_defaults_and_prunes_at_its_rate(script, tmp_path):
    """The defaults (rate 0.5, 6 epochs, batches of 128 on 1,797 digits) plan 449 or 450 samples in a pruned epoch:
    a plain DataLoader's tail batch of 1 or 2 crashed lightly's BatchNorm projection head at 10 epochs."""
    done = _run(script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "achieved rate 0.500 (requested 0.5)" in done.stdout
    if "lightning" in script:  # the callback's line per epoch (Lightning's progress bar shares stdout)
        assert done.stdout.count("sample-forwards so far") == 6
    else:  # a full warm-up epoch, four pruned epochs, a full annealing epoch
        trained = [
            line.split(": trained ")[1].split("/")[0] for line in done.stdout.splitlines() if line.startswith("epoch ")
        ]
        assert trained[0] == trained[-1] == "1797" and all(int(n) in (449, 450) for n in trained[1:-1])
        assert len(trained) == 6


@pytest.mark.slow
@pytest.mark.parametrize("script", ["prune_plain_pytorch.py", "prune_lightning.py"])
def test_an_unreachable_rate_ends_in_one_line_naming_what_works(script, tmp_path):
    done = _run(script, "--rate", "0.5", "--epochs", "2", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: rate=0.5 cannot be reached in 2 epochs: after 1 warm-up epoch on all the data, the other 1 would "
        "each have to skip 1.00 of it. The highest rate reachable in 2 epochs is 0.499; rate 0.5 needs at least 3 "
        "epochs (or fewer warmup_epochs)."
    )


def test_an_example_missing_its_argument_prints_its_usage(tmp_path):
    done = _run("finetune_pretrained_backbone.py", cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: finetune_pretrained_backbone.py") and "checkpoint" in done.stderr


@pytest.mark.slow
def test_finetune_example_runs_with_its_defaults_on_a_pretrained_run(tmp_path):
    from ssl_emp.build import pretrain
    from ssl_emp.config import load_pretrain_config

    run = pretrain(
        load_pretrain_config(
            REPO / "configs" / "default.yaml",
            [
                "train.epochs=2",
                "monitor.every=0",
                "tracking.wandb=disabled",
                f"run.out_dir={tmp_path}",
                "run.name=tiny",
            ],
        ),
        show_progress=False,
    )
    done = _run("finetune_pretrained_backbone.py", str(run.run_dir), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    top1 = float(done.stdout.split("fine-tuned top-1 on digits: ")[1])
    assert top1 > 0.5  # ten classes: chance is 0.1
