"""DDP on CPU with the gloo backend, 2 processes: the engine as torchrun runs it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.data.bank import ImageBank
from ssl_emp.engine import Pretrainer
from ssl_emp.pruning import Pruner

TINY = [
    "model.width=8",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "train.batch_size=128",
    "train.checkpoint_every=1",
    "tracking.wandb=disabled",
    "monitor.every=0",
    "train.device=cpu",
    "pruning.anneal=0",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, overrides, out_dir):
    """One rank: pretrain while recording which images it trained on (by reading the image bank) in which
    epoch, the plans it built, and its score table at the end."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    trained, plans, final = [], [], {}
    original_batches, original_plan, original_run = ImageBank.batches, Pruner.plan, Pretrainer.run

    def recording_batches(self, index_batches):
        for indices, images in original_batches(self, index_batches):
            trained.append((len(plans) - 1, indices.clone()))
            yield indices, images

    def recording_plan(self, epoch):
        plan = original_plan(self, epoch)
        plans.append(plan.indices.clone())
        return plan

    def recording_run(self, tracker, show_progress=None):
        result = original_run(self, tracker, show_progress)
        final["table"] = self.parts.pruner.table.state_dict()
        if hasattr(self.parts.method, "queue"):
            final["queue"] = self.parts.method.queue.keys.clone()
        if hasattr(self.parts.method, "criterion"):
            final["center"] = self.parts.method.criterion.center.clone()
        final["ddp_ignores"] = sorted(getattr(self.parts.forward, "parameters_to_ignore", []))  # one process: no DDP
        return result

    ImageBank.batches, Pruner.plan, Pretrainer.run = recording_batches, recording_plan, recording_run
    try:
        result = pretrain(load_pretrain_config("configs/default.yaml", overrides), show_progress=False)
    finally:
        ImageBank.batches, Pruner.plan, Pretrainer.run = original_batches, original_plan, original_run
    per_epoch = [torch.cat([idx for e, idx in trained if e == epoch]) for epoch in range(len(plans))]
    torch.save(
        {
            "trained": per_epoch,
            "plans": plans,
            "table": final["table"],
            "queue": final.get("queue"),
            "center": final.get("center"),
            "ddp_ignores": final.get("ddp_ignores"),
            "achieved_rate": result.achieved_rate,
            "sample_forwards": result.sample_forwards,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def _run(world_size, overrides, tmp_path, name):
    out = tmp_path / f"record-{name}"
    out.mkdir()
    args = (world_size, _free_port(), [*overrides, f"run.out_dir={tmp_path / 'runs'}", f"run.name={name}"], str(out))
    if world_size == 1:
        _worker(0, *args)
    else:
        mp.start_processes(_worker, args=args, nprocs=world_size, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


@pytest.fixture(autouse=True)
def _single_process_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco", "dino"])
def test_two_ranks_train_each_planned_index_once_and_keep_identical_score_tables(tmp_path, method):
    r0, r1 = _run(
        2,
        [
            *TINY,
            "train.epochs=3",
            "pruning.scorer=emp",
            "pruning.selector=infobatch",
            "pruning.rate=0.5",
            f"method.name={method}",
            *(["method.queue_size=256"] if method == "moco" else []),
            *(["method.bottleneck_dim=16"] if method == "dino" else []),
        ],
        tmp_path,
        "ddp",
    )
    assert len(r0["plans"]) == len(r1["plans"]) == 3
    for epoch, plan in enumerate(r0["plans"]):
        assert torch.equal(plan, r1["plans"][epoch])  # every rank builds the same plan
        together = torch.cat([r0["trained"][epoch], r1["trained"][epoch]])
        # The two ranks' shards, together, are exactly the plan: each planned index once, nothing else.
        assert torch.equal(together.sort().values, plan.sort().values)
        assert r0["trained"][epoch].numel() == pytest.approx(plan.numel() / 2, abs=len(plan) // 128 + 1)
    assert len(r0["plans"][1]) < len(r0["plans"][0])  # the pruned epochs really are pruned
    for key, value in r0["table"].items():
        # Identical score tables on both ranks (NaN marks loss-history slots not yet filled, on both alike).
        torch.testing.assert_close(value, r1["table"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert r0["achieved_rate"] == pytest.approx(0.5, abs=0.01) and r0["sample_forwards"] == r1["sample_forwards"]
    if method == "moco":  # every rank enqueued the same keys, so DDP need not (and does not) broadcast the queue
        assert torch.equal(r0["queue"], r1["queue"])
        assert r0["ddp_ignores"] == ["queue.keys", "queue.pointer"]
    if method == "dino":  # each rank updated its center with the all-reduced batch center; DDP broadcast none
        assert r0["ddp_ignores"] == ["criterion.center"]
        assert torch.equal(r0["center"], r1["center"]) and bool(r0["center"].abs().sum() > 0)


@pytest.mark.slow
@pytest.mark.parametrize("selector", ["coverage", "central"])
def test_selectors_reading_embeddings_plan_alike_on_every_rank(tmp_path, selector):
    """Each rank embeds its share of the clean images and keeps it (a sharded memory): the ranks cluster across
    their shards and build the same plans (each checked by digest as it is made), refreshed every epoch here."""
    r0, r1 = _run(
        2,
        [*TINY, "train.epochs=4", f"pruning.selector={selector}", "pruning.rate=0.5", "pruning.embed_every=1"],
        tmp_path,
        "ddp-embed",
    )
    assert len(r0["plans"]) == len(r1["plans"]) == 4
    for epoch, plan in enumerate(r0["plans"]):
        assert torch.equal(plan, r1["plans"][epoch])
    assert len(r0["plans"][1]) < len(r0["plans"][0])


@pytest.mark.slow
@pytest.mark.kernels("gloo's all-reduce order against one process's sums")
def test_two_process_and_one_process_runs_build_the_same_plans(tmp_path):
    """Same seed, same global batch: the plans match. The random selector is used because its plans depend on
    (seed, epoch) only; score-driven plans also depend on the scores, which differ slightly between the two
    runs (each rank augments with its own random stream), so there the guarantee is the one above: identical
    tables, hence identical plans, on every rank of one run."""
    overrides = [*TINY, "train.epochs=3", "pruning.selector=random", "pruning.rate=0.5"]
    (single,) = _run(1, overrides, tmp_path, "one")
    double = _run(2, overrides, tmp_path, "two")
    for plan_single, plan_double in zip(single["plans"], double[0]["plans"], strict=True):
        assert torch.equal(plan_single, plan_double)
    assert single["sample_forwards"] == double[0]["sample_forwards"]


@pytest.mark.slow
def test_torchrun_launch_writes_once_from_rank_zero(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port",
            str(_free_port()),
            "-m",
            "ssl_emp.pretrain",
            "--config",
            "configs/default.yaml",
            *TINY,
            "train.epochs=3",
            "pruning.scorer=emp",
            "pruning.selector=infobatch",
            "pruning.rate=0.3",
            f"run.out_dir={tmp_path}",
            "run.name=torchrun",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Done: 3 epochs") == 1  # one summary, from rank 0
    assert "achieved 0.30" in done.stdout
    run_dir = tmp_path / "torchrun"
    epochs = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "train/epoch_loss" in line
    ]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]  # written once, not once per rank
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temporary files left


# --------------------------------------------------------------------------- a rank killed under torchrun

# Epochs of 21 steps (full data) and 8 (pruned: rate 0.5 over 6 epochs, 5 of them pruned, each keeps 539 samples).
RESTARTABLE = [
    *TINY,
    "train.batch_size=64",
    "train.epochs=6",
    "train.log_every=1",
    "pruning.scorer=emp",
    "pruning.selector=infobatch",
    "pruning.rate=0.5",
    "run.resume=auto",
]


def _logged_steps(run_dir) -> list[int]:
    """The steps rank 0 has logged so far (each line is flushed as it is written)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train/loss"' in line]


def _worker_with_rank(agent: int, rank: int) -> int:
    """The pid of the worker of torchrun's agent ``agent`` that runs ``rank`` (read from the workers' environment)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            parent = int(next(line for line in status.read_text().splitlines() if line.startswith("PPid:")).split()[1])
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration):  # a process that ended meanwhile
            continue
        if parent == agent and f"RANK={rank}".encode() in environ:
            return int(status.parent.name)
    raise AssertionError(f"torchrun ({agent}) has no worker with RANK={rank}")


def _torchrun(out, name, kill_rank_1_after_step=None):
    """Run the restartable command under ``torchrun --max-restarts 1``; once rank 0 has logged the given step,
    SIGKILL rank 1. Returns the finished command's output and the steps rank 0 had logged when rank 1 died."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "-m",
        "ssl_emp.pretrain",
        "--config",
        "configs/default.yaml",
        *RESTARTABLE,
        f"run.out_dir={out}",
        f"run.name={name}",
    ]
    agent = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "OMP_NUM_THREADS": "1"}
    )
    if kill_rank_1_after_step is not None:
        deadline = time.time() + 400
        while (
            max(_logged_steps(out / name), default=0) < kill_rank_1_after_step
            and agent.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.005)
        assert agent.poll() is None, "the run ended before a rank could be killed"
        os.kill(_worker_with_rank(agent.pid, 1), signal.SIGKILL)
    at_kill = _logged_steps(out / name)
    stdout, stderr = agent.communicate(timeout=600)
    assert agent.returncode == 0, stderr[-3000:]
    return stdout, at_kill


@pytest.mark.slow
def test_torchrun_restarts_a_group_after_a_rank_is_killed_and_it_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL rank 1 inside the second pruned epoch (epoch 3). torchrun stops the other rank and runs the same
    command again; with run.resume=auto the new group resumes from last.pt (the end of epoch 2) and must end as
    an uninterrupted run does: same kept counts, epoch losses, score tables and weights, to 1e-6 (on the CPU with
    one thread per rank the computation is deterministic, as in test_faults' single-process SIGKILL test)."""
    from ssl_emp.engine import load_checkpoint
    from ssl_emp.plot import epoch_records

    whole, _ = _torchrun(tmp_path, "whole")
    assert whole.count("Done: 6 epochs") == 1 and "Resuming" not in whole
    a = {r["epoch"]: r for r in epoch_records(tmp_path / "whole")}  # the last record of each epoch
    end_of_epoch_2, end_of_epoch_3 = a[2]["step"], a[3]["step"]
    assert (end_of_epoch_2, end_of_epoch_3) == (21 + 8, 21 + 16)
    restarted, at_kill = _torchrun(tmp_path, "killed", kill_rank_1_after_step=end_of_epoch_2 + 2)
    killed = tmp_path / "killed"
    assert end_of_epoch_2 < max(at_kill) < end_of_epoch_3  # killed inside epoch 3
    assert f"Resuming {killed} at epoch 2 (step {end_of_epoch_2})" in restarted
    assert restarted.count("Done: 6 epochs") == 1
    steps = _logged_steps(killed)
    assert steps == sorted(set(steps))  # the steps logged past the checkpoint before the kill were rewound, not doubled

    b = {r["epoch"]: r for r in epoch_records(killed)}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for epoch in a:
        assert b[epoch]["pruning/epoch_kept"] == a[epoch]["pruning/epoch_kept"], epoch
        assert b[epoch]["train/epoch_loss"] == pytest.approx(a[epoch]["train/epoch_loss"], rel=1e-6), epoch
    assert a[3]["pruning/epoch_kept"] < 1347
    first, second = load_checkpoint(tmp_path / "whole"), load_checkpoint(killed)
    assert second["global_step"] == first["global_step"]
    for key in ("scores", "visits", "last_epoch"):
        torch.testing.assert_close(
            second["pruning"]["table"][key], first["pruning"]["table"][key], rtol=1e-6, atol=1e-6
        )
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=1e-6, atol=1e-6, msg=key)
