"""W&B worth opening (pictures, console, checkpoint artifact, the mode said at start) and the PNG plot of a run."""

import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from ssl_emp.build import pretrain
from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.config import ConfigError, load_pretrain_config
from ssl_emp.data import load_bank
from ssl_emp.engine.dashboard import pruner_samples
from ssl_emp.plot import main as plot_main
from ssl_emp.pruning.table import ScoreTable

# Pruned from the first epoch, so after three some samples have never been kept.
RUN = [
    "model.width=8",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "train.batch_size=128",
    "train.epochs=3",
    "monitor.every=1",
    "monitor.train_subset=400",
    "monitor.test_subset=200",
    "pruning.rate=0.5",
    "pruning.warmup_epochs=0",
    "pruning.anneal=0",
]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """A real offline W&B run from the command line, with pictures every epoch and the checkpoint artifact:
    ``(run directory, what it printed)``."""
    out = tmp_path_factory.mktemp("dashboard")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_emp.pretrain",
            "--config",
            "configs/default.yaml",
            *RUN,
            "tracking.wandb=offline",
            "tracking.images_every=1",
            "tracking.checkpoint_artifact=true",
            f"run.out_dir={out}",
            "run.name=offline",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr
    return out / "offline", done.stdout


def test_offline_run_logs_pictures_console_and_checkpoint_and_says_how_to_sync(offline_run):
    run_dir, printed = offline_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    from ssl_emp import commands

    assert (
        f"W&B: offline; to upload this run later: {commands.module('wandb', 'sync', runs[0])}" in printed.splitlines()
    )
    media = runs[0] / "files" / "media"
    assert len(list((media / "images" / "views").glob("pairs_*.png"))) == 3  # one grid per epoch
    for group in ("highest_score", "lowest_score", "never_kept"):
        assert list((media / "images" / "pruning").glob(f"{group}_*.png")), group
    last_table = max(
        (media / "table" / "pruning").glob("samples_*.table.json"), key=lambda p: int(p.name.split("_")[1])
    )
    table = json.loads(last_table.read_text())
    assert table["columns"] == ["group", "index", "image", "score", "visits", "last_epoch"]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {r["group"] for r in rows} == {"highest score", "lowest score", "never kept"}
    assert all(r["visits"] == 0 for r in rows if r["group"] == "never kept")
    # The console went to the run's Logs tab, and the checkpoint artifact is recorded for wandb sync.
    assert "epoch 3/3" in (runs[0] / "files" / "output.log").read_text()
    assert b"checkpoint-" in next(runs[0].glob("run-*.wandb")).read_bytes()


def test_pruner_samples_are_what_the_score_table_says(offline_run):
    run_dir, _ = offline_run
    ckpt = load_checkpoint(run_dir)
    table = ScoreTable(1347, ckpt["pruning"]["table"]["loss_history"].shape[1])
    table.load_state_dict(ckpt["pruning"]["table"])
    rows = pruner_samples(load_bank("digits", None, "train"), table, per_group=5)
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("highest score", "lowest score", "never kept")}
    seen = table.scores[torch.isfinite(table.scores)]
    assert [r["score"] for r in by_group["highest score"]] == seen.sort(descending=True).values[:5].tolist()
    assert [r["score"] for r in by_group["lowest score"]] == seen.sort().values[:5].tolist()
    assert len(by_group["never kept"]) == 5 and all(table.visits[r["index"]] == 0 for r in by_group["never kept"])
    assert rows[0]["image"].dtype == torch.uint8 and rows[0]["image"].shape[-1] == 3


def test_pictures_leave_training_unchanged(offline_run, tmp_path):
    """The views for the dashboard are drawn under a forked RNG: the same run without W&B ends with equal weights.
    (WANDB_MODE=disabled above: an explicit tracking.wandb=offline wins over it, and no key is needed.)"""
    run_dir, _ = offline_run
    cfg = load_pretrain_config(
        "configs/default.yaml", [*RUN, "tracking.wandb=disabled", f"run.out_dir={tmp_path}", "run.name=plain"]
    )
    plain = pretrain(cfg, show_progress=False)
    pictured, unpictured = load_checkpoint(run_dir)["model"], load_checkpoint(plain.run_dir)["model"]
    assert all(torch.equal(pictured[k], unpictured[k]) for k in pictured)


def test_picture_settings_without_wandb_are_refused():
    with pytest.raises(ConfigError, match="tracking.images_every"):
        load_pretrain_config("configs/default.yaml", ["tracking.wandb=disabled", "tracking.images_every=5"])


def test_plot_draws_a_png_from_a_real_run(offline_run, tmp_path, capsys):
    run_dir, _ = offline_run
    output = tmp_path / "plot.png"
    assert plot_main([str(run_dir), "--output", str(output)]) == 0
    header = output.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 1000 and height > 300  # three panels side by side
    assert plot_main([str(tmp_path)]) == 2  # a folder without metrics.jsonl: one line, no traceback
    assert "No metrics.jsonl" in capsys.readouterr().err


def test_the_visits_panel_puts_every_run_on_one_axis_and_names_its_selector_and_rate(offline_run):
    """A full-data run is a step at 1, a pruned one's mean share is 1 - rate, whatever the run's length; the legend
    says which selector at which rate (a histogram of raw counts put a full run at the right edge and squashed
    a pruned one to the left)."""
    from ssl_emp.plot import epoch_records, run_label, visit_shares

    run_dir, _ = offline_run
    records = epoch_records(run_dir)
    assert run_label(run_dir, records) == "offline: random, rate 0.50"
    x, y = visit_shares(records[-1]["pruning/visit_histogram"], records[-1]["epoch"])
    assert x[-1] <= 1.0 and y[-1] == pytest.approx(1.0)
    mean = sum(share * (after - before) for share, before, after in zip(x[1:], y, y[1:]))
    assert mean == pytest.approx(1 - records[-1]["pruning/achieved_rate"], abs=1e-6)
    assert visit_shares([0, 0, 0, 40], 3) == ([0.0, 0.0, 1 / 3, 2 / 3, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0])


def test_view_pairs_read_a_streamed_folder_and_leave_the_rng_alone(tmp_path):
    """A folder streamed from disk is read file by file (an unreadable one left out), and drawing the views
    consumes none of the training's random numbers."""
    from PIL import Image

    from ssl_emp.data.augment import TwoViews
    from ssl_emp.data.stream import ImageFolderStream
    from ssl_emp.engine.dashboard import view_pairs

    for i in range(6):
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (40 * i, 100, 200)).save(tmp_path / "train" / "a" / f"{i}.png")
    (tmp_path / "train" / "a" / "9.png").write_bytes(b"not an image")
    stream = ImageFolderStream(str(tmp_path), 16, skip_unreadable=True)
    views = TwoViews(16, 3, [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    grid, caption = view_pairs(stream, views, [0.5] * 3, [0.25] * 3, torch.device("cpu"), count=7)
    assert torch.equal(torch.get_rng_state(), before)
    readable = [i for i, path in enumerate(stream.paths) if not path.endswith("9.png")]
    assert caption.startswith(f"rows: samples {readable};")
    side = 16 * 6 + 2  # each picture enlarged to 96 px, plus the grid's padding
    assert grid.dtype == torch.uint8 and grid.shape == (2 + len(readable) * side, 2 + 3 * side, 3)
