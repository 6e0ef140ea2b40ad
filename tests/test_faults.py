"""Faults: a killed run resumes, saves are atomic, non-finite losses are handled, W&B trouble is survived."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssl_emp.build import pretrain
from ssl_emp.checkpoint import atomic_save
from ssl_emp.config import load_pretrain_config
from ssl_emp.engine import CheckpointError, load_checkpoint
from ssl_emp.plot import epoch_records
from ssl_emp.tracking import Tracker, rewind_metrics

KILLABLE = [
    "model.width=32",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "train.batch_size=64",
    "train.epochs=8",
    "train.checkpoint_every=1",
    "tracking.wandb=disabled",
    "monitor.every=0",
    "train.device=cpu",
    "pruning.scorer=emp",
    "pruning.selector=infobatch",
    "pruning.rate=0.5",
]


def _cli(*args):
    return [sys.executable, "-m", "ssl_emp.pretrain", *args]


def _epoch_records(run_dir):
    return {r["epoch"]: r for r in epoch_records(run_dir)}  # the last record of each epoch


@pytest.mark.slow
def test_sigkilled_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--config", "configs/default.yaml", *KILLABLE, f"run.out_dir={tmp_path}"]
    subprocess.run(_cli(*common, "run.name=whole"), check=True, capture_output=True, env=env, timeout=300)

    victim = subprocess.Popen(
        _cli(*common, "run.name=killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    second = tmp_path / "killed" / "checkpoints" / "epoch_0002.pt"
    deadline = time.time() + 120
    while not second.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # in the middle of epoch 3 (or just after it)
    assert victim.wait() == -signal.SIGKILL
    killed_at = load_checkpoint(tmp_path / "killed")["epoch"]
    assert 2 <= killed_at < 8, killed_at

    resumed = subprocess.run(
        _cli("--resume", str(tmp_path / "killed")), capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {tmp_path / 'killed'} at epoch {killed_at}" in resumed.stdout
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the killed attempt's steps past the checkpoint were dropped, not written twice

    # "Same": every epoch kept the same number of samples (same plans), the epoch losses agree to float
    # round-off, and the final score tables and weights are equal. On CPU with a fixed thread count the
    # computation is deterministic, so these hold to 1e-6; they would not across different hardware.
    whole, killed = _epoch_records(tmp_path / "whole"), _epoch_records(tmp_path / "killed")
    assert sorted(whole) == sorted(killed) == list(range(1, 9))
    for epoch in whole:
        assert killed[epoch]["pruning/epoch_kept"] == whole[epoch]["pruning/epoch_kept"], epoch
        assert killed[epoch]["train/epoch_loss"] == pytest.approx(whole[epoch]["train/epoch_loss"], rel=1e-6)
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "killed")
    for key in ("scores", "visits", "last_epoch"):
        torch.testing.assert_close(a["pruning"]["table"][key], b["pruning"]["table"][key], rtol=1e-6, atol=1e-6)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-6, atol=1e-6, msg=key)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"format": "ssl_emp.checkpoint/1", "epoch": 1}, path)
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a crash mid-write leaves in the temporary file
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"format": "ssl_emp.checkpoint/1", "epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def _poison_step(monkeypatch, bad_call):
    """Make the SimCLR loss of the ``bad_call``-th forward pass NaN."""
    import ssl_emp.methods.simclr as simclr

    real = simclr.per_sample_ntxent_with_stats
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, entropy, positive_prob = real(*args, **kwargs)
        if calls["n"] == bad_call:
            loss = loss * float("nan")
        return loss, entropy, positive_prob

    monkeypatch.setattr(simclr, "per_sample_ntxent_with_stats", poisoned)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_overrides, monkeypatch):
    _poison_step(monkeypatch, bad_call=15)  # 11 steps per epoch: step 15 is in epoch 2
    cfg = load_pretrain_config("configs/default.yaml", [*tiny_overrides, "train.epochs=3", "monitor.every=0"])
    with pytest.raises(FloatingPointError, match=r"at step 15 \(epoch 2\)"):
        pretrain(cfg, show_progress=False)
    saved = load_checkpoint(cfg.run.out_dir + "/tiny")
    assert saved["epoch"] == 1 and all(
        torch.isfinite(v).all()
        for v in saved["model"].values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    )


def test_nonfinite_step_can_be_skipped_and_counted(tiny_overrides, monkeypatch):
    _poison_step(monkeypatch, bad_call=15)
    cfg = load_pretrain_config(
        "configs/default.yaml", [*tiny_overrides, "train.epochs=3", "monitor.every=0", "train.nonfinite=skip"]
    )
    result = pretrain(cfg, show_progress=False)
    assert result.history[-1]["train/skipped_steps"] == 1
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("train/skipped_steps") for r in logged if "train/epoch_loss" in r] == [None, 1, 1]
    assert all(r["train/epoch_loss"] == r["train/epoch_loss"] for r in result.history)  # no NaN epoch loss
    final = load_checkpoint(result.checkpoint)
    assert final["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())


def test_misconfigured_wandb_never_stops_training(tiny_overrides, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: online mode has no key
    cfg = load_pretrain_config("configs/default.yaml", [*tiny_overrides, "tracking.wandb=online", "monitor.every=0"])
    with pytest.warns(UserWarning, match="W&B could not start"):
        result = pretrain(cfg, show_progress=False)
    assert result.epochs_done == 2 and (result.run_dir / "metrics.jsonl").is_file()


def test_wandb_failing_mid_run_only_warns(tmp_path):
    tracker = Tracker(tmp_path, mode="disabled", project="p", entity=None, name="n", config={}, job_type="t")

    class Unreachable:
        def log(self, *args, **kwargs):
            raise ConnectionError("api.wandb.ai unreachable")

        def finish(self):
            raise ConnectionError("api.wandb.ai unreachable")

    tracker.wandb_run = Unreachable()
    with pytest.warns(UserWarning, match="unreachable"):
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.finish()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] == 1.0


def test_rewinding_metrics_keeps_what_came_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 1, "train/loss": 3.0},
        {"step": 2, "epoch": 1},
        {"step": None, "note": "kept"},
        {"step": 3, "train/loss": 2.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "train/lo')  # a crash cut it short
    rewind_metrics(path, 2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines[:3]
    rewind_metrics(tmp_path / "none.jsonl", 2)  # a run without metrics yet has nothing to rewind
    assert not (tmp_path / "none.jsonl").exists()


def test_a_resumed_run_rewinds_its_metrics_to_the_checkpoint(tiny_overrides):
    """What a stopped attempt logged past its last checkpoint (here a planted line far ahead) is gone once the run
    resumes: the resumed run writes those steps again."""
    run = pretrain(
        load_pretrain_config("configs/default.yaml", [*tiny_overrides, "monitor.every=0"]), show_progress=False
    )
    metrics = run.run_dir / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": 10**6, "train/loss": 0.0}) + "\n")
    pretrain(
        load_pretrain_config(
            "configs/default.yaml",
            [*tiny_overrides, "monitor.every=0", "run.resume=true", "run.extend=true", "train.epochs=3"],
        ),
        show_progress=False,
    )
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 10**6 not in steps and steps == sorted(steps) and max(steps) > run.global_step


def test_checkpoint_from_another_architecture_is_refused(tiny_overrides):
    cfg = load_pretrain_config("configs/default.yaml", [*tiny_overrides, "monitor.every=0"])
    run = pretrain(cfg, show_progress=False)
    from ssl_emp.build import build_trainer

    other = load_pretrain_config("configs/default.yaml", [*tiny_overrides, "model.width=16", "monitor.every=0"])
    with pytest.raises(CheckpointError, match="do not fit this run's model"):
        build_trainer(other, run.run_dir).load_state_dict(load_checkpoint(run.checkpoint))


def test_resume_with_an_incompatible_config_is_explained(tiny_overrides):
    from ssl_emp.engine import RunDirError

    pretrain(load_pretrain_config("configs/default.yaml", [*tiny_overrides, "monitor.every=0"]), show_progress=False)
    changed = load_pretrain_config(
        "configs/default.yaml",
        [
            *tiny_overrides,
            "monitor.every=0",
            "run.resume=true",
            "model.width=16",
            "method.name=moco",
            "method.queue_size=256",
        ],
    )
    with pytest.raises(RunDirError, match="fixed for the life of a run") as error:
        pretrain(changed, show_progress=False)
    assert "method.name: 'simclr' -> 'moco'" in str(error.value) and "model.width: 8 -> 16" in str(error.value)


def test_resume_refuses_another_dino_head(tmp_path):
    from ssl_emp.engine import RunDirError
    from ssl_emp.engine.run_dir import check_resume_compatible

    saved = {"method": {"name": "dino", "bottleneck_dim": 256, "head_batchnorm": False}}
    check_resume_compatible(saved, saved, tmp_path)
    for key, value in (("bottleneck_dim", 64), ("head_batchnorm", True)):
        with pytest.raises(RunDirError, match=f"method.{key}"):
            check_resume_compatible(saved, {"method": {**saved["method"], key: value}}, tmp_path)
