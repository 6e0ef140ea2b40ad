"""Stopping on a signal: SIGINT (Ctrl-C), SIGTERM (preemption) or SIGUSR1 (a scheduler's time-limit warning) in the
middle of an epoch saves where the run is, says how to resume, exits 130, 143 or 138, and the resumed run ends
exactly as an uninterrupted one."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssl_emp.engine import load_checkpoint
from ssl_emp.plot import epoch_records

# Epochs of 42 steps (full data) and 21 (pruned: rate 0.3 over 5 epochs, 3 of them pruned, each keeps half).
STOPPABLE = [
    "model.width=16",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "train.batch_size=32",
    "train.epochs=5",
    "train.checkpoint_every=1",
    "train.log_every=1",
    "tracking.wandb=disabled",
    "monitor.every=0",
    "train.device=cpu",
    "pruning.scorer=emp",
    "pruning.selector=infobatch",
    "pruning.rate=0.3",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FIRST_PRUNED_STEP = 43  # the first step of epoch 2


def _cli(*args):
    return [sys.executable, "-m", "ssl_emp.pretrain", *args]


def _last_step(run_dir) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train/loss"' in line]
    return max(steps, default=0)


def _start_and_signal(tmp_path, name, signals, at_step=FIRST_PRUNED_STEP + 2):
    """Start a run, send ``signals`` once it has logged step ``at_step`` (inside the first pruned epoch)."""
    run = subprocess.Popen(
        _cli("--config", "configs/default.yaml", *STOPPABLE, f"run.out_dir={tmp_path}", f"run.name={name}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.time() + 240
    while _last_step(tmp_path / name) < at_step and run.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert run.poll() is None, "the run ended before it could be signalled"
    for sig in signals:
        run.send_signal(sig)
    out, err = run.communicate(timeout=120)
    return run.returncode, out, err


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    subprocess.run(
        _cli("--config", "configs/default.yaml", *STOPPABLE, f"run.out_dir={out}", "run.name=whole"),
        check=True,
        capture_output=True,
        env=ENV,
        timeout=400,
    )
    return out / "whole"


def _epoch_records(run_dir):
    return {r["epoch"]: r for r in epoch_records(run_dir)}  # the last record of each epoch


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1], ids=["SIGINT", "SIGTERM", "SIGUSR1"])
def test_a_signal_mid_epoch_saves_and_the_resumed_run_ends_like_an_uninterrupted_one(whole, tmp_path, sig):
    code, out, err = _start_and_signal(tmp_path, "stopped", [sig])
    run_dir = tmp_path / "stopped"
    assert code == 128 + sig, err
    said = re.search(
        r"interrupted at epoch (\d+), step (\d+); resume with: "
        r"\S*python -m ssl_emp\.pretrain --resume (\S+)",  # this interpreter, as the shell can run it
        err,
    )
    assert said and said.group(3) == str(run_dir), err
    assert "Traceback" not in err
    # SLURM's warning before a time limit: the line and the exit code tell the job script to requeue.
    assert ("exit code 138: requeue the job" in err) == (sig == signal.SIGUSR1), err
    saved = load_checkpoint(run_dir)
    # Stopped inside epoch 2, after the step it named: the epoch's plan and the steps done of it were saved.
    assert (int(said.group(1)), int(said.group(2))) == (2, saved["global_step"])
    assert saved["epoch"] == 1 and 0 < saved["position"]["steps_done"] < 21
    assert saved["global_step"] == 42 + saved["position"]["steps_done"]

    resumed = subprocess.run(_cli("--resume", str(run_dir)), capture_output=True, text=True, env=ENV, timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {run_dir} at epoch 1 (step {saved['global_step']})" in resumed.stdout

    # Same plans, same epoch losses (to float round-off), equal final score tables and weights: on the CPU with
    # one thread the computation is deterministic (as in test_faults' SIGKILL test).
    a, b = _epoch_records(whole), _epoch_records(run_dir)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    for epoch in a:
        assert b[epoch]["pruning/epoch_kept"] == a[epoch]["pruning/epoch_kept"], epoch
        assert b[epoch]["train/epoch_loss"] == pytest.approx(a[epoch]["train/epoch_loss"], rel=1e-6), epoch
    first, second = load_checkpoint(whole), load_checkpoint(run_dir)
    assert second["position"] is None and second["global_step"] == first["global_step"]
    for key in ("scores", "visits", "last_epoch"):
        torch.testing.assert_close(
            second["pruning"]["table"][key], first["pruning"]["table"][key], rtol=1e-6, atol=1e-6
        )
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=1e-6, atol=1e-6, msg=key)


@pytest.mark.slow
def test_a_second_signal_exits_at_once_leaving_a_readable_checkpoint(tmp_path):
    code, out, err = _start_and_signal(tmp_path, "twice", [signal.SIGINT, signal.SIGINT])
    assert code == 130, err
    assert "Traceback" not in err
    checkpoints = tmp_path / "twice" / "checkpoints"
    load_checkpoint(checkpoints / "last.pt")  # the end of epoch 1, or the stop: either way whole
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_progress_prints_a_line_per_epoch_when_output_is_not_a_terminal(tmp_path):
    """Output captured (not a terminal): one plain line per epoch, with loss, images/s, kept count, elapsed and
    ETA, flushed as it goes; no progress bar's carriage returns."""
    done = subprocess.run(
        _cli(
            "model.width=8",
            "model.proj_hidden_dim=32",
            "model.proj_output_dim=16",
            "train.batch_size=128",
            "train.epochs=3",
            "train.checkpoint_every=50",
            "tracking.wandb=disabled",
            "monitor.every=0",
            "train.device=cpu",
            f"run.out_dir={tmp_path}",
            "run.name=watched",
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert re.search(
            r"loss \d+\.\d{4}  \d+ img/s  kept 1347/1347.*elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d$", line
        ), line
    assert "\r" not in done.stdout + done.stderr


def _ddp_worker(rank, world_size, port, overrides, out_dir, signal_at):
    """One gloo rank; rank 1 alone is sent SIGTERM during step ``signal_at`` (0: never)."""
    from ssl_emp.build import pretrain
    from ssl_emp.config import load_pretrain_config
    from ssl_emp.engine import Pretrainer, RunInterrupted

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    original = Pretrainer.train_step

    def signalled_step(self, *args, **kwargs):
        if rank == 1 and self.counts.global_step + 1 == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    Pretrainer.train_step = signalled_step
    try:
        result = pretrain(load_pretrain_config("configs/default.yaml", overrides), show_progress=False)
        outcome = {"finished_at": result.global_step}
    except RunInterrupted as stopped:
        outcome = {"epoch": stopped.epoch, "step": stopped.step, "code": stopped.exit_code}
    finally:
        Pretrainer.train_step = original
    (out_dir / f"rank{rank}.json").write_text(json.dumps(outcome))


def _ddp(tmp_path, overrides, signal_at, name):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"outcome-{name}"
    out.mkdir()
    mp.start_processes(_ddp_worker, args=(2, port, overrides, out, signal_at), nprocs=2, start_method="spawn")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_under_ddp_a_signal_to_one_rank_stops_every_rank_at_the_same_step_and_resumes(tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    overrides = [
        "model.width=8",
        "model.proj_hidden_dim=32",
        "model.proj_output_dim=16",
        "train.batch_size=128",
        "train.epochs=2",
        "tracking.wandb=disabled",
        "monitor.every=0",
        "train.device=cpu",
        f"run.out_dir={tmp_path}",
        "run.name=ddp",
    ]
    first, second = _ddp(tmp_path, overrides, signal_at=5, name="stopped")
    assert first == second == {"epoch": 1, "step": 5, "code": 143}  # rank 0 was never signalled
    saved = load_checkpoint(tmp_path / "ddp")
    assert saved["global_step"] == 5 and saved["position"]["steps_done"] == 5
    resumed = _ddp(tmp_path, [*overrides, "run.resume=true"], signal_at=0, name="resumed")
    assert resumed == [{"finished_at": 22}] * 2  # two epochs of 11 steps, none repeated or skipped
