"""A first run on one's own folder goes with the defaults: ``ssl_emp.train(out=..., data=FOLDER, epochs=4, rate=0.5)``
and ``python -m ssl_emp.pretrain --data FOLDER`` on 300 unlabelled 32 px images, with nothing else set. Each of the
refusals a new user met there has a test here: the image size is read from the images, a batch larger than what the
pruning rate leaves per epoch shrinks to it (and refuses in one line below a workable size), the online monitor turns
itself off on images without labels, and the whole call finishes, in Python and on the command line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import ssl_emp
from ssl_emp.data import load_bank
from ssl_emp.pretrain import main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "tracking.wandb=disabled"]


def _write_images(folder: Path, sizes, seed: int = 0) -> Path:
    """Random RGB images of the given (width, height), alternately PNG and JPEG, as a camera roll might hold."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / (f"{i:04d}.png" if i % 2 else f"{i:04d}.jpg"))
    return folder


@pytest.fixture(scope="module")
def my_images(tmp_path_factory):
    """The issue's folder: 300 unlabelled 32 px images, PNG and JPEG."""
    return _write_images(tmp_path_factory.mktemp("user") / "my_images", [(32, 32)] * 300)


def test_a_folder_is_read_at_its_images_size_when_none_is_given(my_images):
    bank = load_bank("imagefolder", str(my_images), "train")
    assert bank.images.shape == (300, 3, 32, 32) and bank.num_classes == 0


def test_where_sizes_differ_the_folder_is_read_at_the_median_shorter_side_capped_at_224(tmp_path):
    mixed = _write_images(tmp_path / "mixed", [(40, 30), (20, 50), (64, 48), (33, 90), (100, 24)])
    assert load_bank("imagefolder", str(mixed), "train").image_size == 30  # shorter sides 20 24 30 33 48
    large = _write_images(tmp_path / "large", [(640, 480), (300, 250), (500, 375)])
    assert load_bank("imagefolder", str(large), "train").image_size == 224  # median 375, capped


def test_the_issues_call_on_a_fresh_folder_finishes_with_defaults_only(my_images, tmp_path, capfd):
    out = tmp_path / "runs" / "mine"
    run = ssl_emp.train(out=out, data=my_images, epochs=4, rate=0.5)
    assert run.metrics["epoch"] == 4 and run.result.num_classes == 0
    assert run.metrics["pruning/achieved_rate"] == pytest.approx(0.5, abs=0.005)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    # What the run chose is saved with it, so a resume, the probe and the export read the same.
    assert (saved["data"]["image_size"], saved["monitor"]["every"]) == (32, 0)
    err = capfd.readouterr().err
    assert "note: data.image_size not set; using 32: the images are 32x32 (all 300 read)" in err
    assert "note: monitor.every=25 is off" in err and "no labels" in err
    assert "note: train.batch_size 256 is more than the 150 samples pruning.rate=0.5 leaves per epoch" in err
    assert "Traceback" not in err


def test_on_images_without_labels_the_online_monitor_is_off_with_a_note(my_images, tmp_path, capfd):
    from ssl_emp.build import build_trainer
    from ssl_emp.config import load_pretrain_config

    cfg = load_pretrain_config(None, ["data.name=imagefolder", f"data.root={my_images}", "data.image_size=32"])
    assert cfg.monitor.every == 25  # the folder recipe's
    trainer = build_trainer(cfg, tmp_path / "built")
    # The kNN is off; the label-free checks, which need no labels, keep its schedule.
    assert [type(m).__name__ for m in trainer.parts.monitor.monitors] == ["LabelFreeMonitor"]
    saved = trainer.settings.run_config["monitor"]
    assert (saved["every"], saved["label_free_every"]) == (0, 25)
    err = capfd.readouterr().err
    assert err.count("monitor.every=25 is off") == 1 and "Traceback" not in err


def test_the_command_line_takes_the_folder_with_the_same_rules(my_images, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_emp.pretrain",
            "--data",
            str(my_images),
            "train.epochs=4",
            "pruning.rate=0.5",
            f"run.out_dir={tmp_path}",
            "run.name=mine",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done: 4 epochs" in done.stdout and "achieved 0.50" in done.stdout
    assert "using 32" in done.stderr and "monitor.every=25 is off" in done.stderr
    saved = yaml.safe_load((tmp_path / "mine" / "config.yaml").read_text())["data"]
    assert (saved["name"], saved["root"], saved["image_size"]) == ("imagefolder", str(my_images), 32)


def test_data_names_a_dataset_or_a_folder_on_the_command_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "run.name=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data=") and "neither a dataset name" in err and err.count("\n") == 1


def test_a_batch_larger_than_what_the_rate_leaves_shrinks_to_it(tmp_path, capsys):
    """Digits (1,347 images) at rate 0.7 leave 404 per epoch."""
    code = main(
        [
            *FAST,
            "train.epochs=4",
            "train.batch_size=512",
            "pruning.rate=0.7",
            "monitor.every=0",
            f"run.out_dir={tmp_path}",
            "run.name=shrunk",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: train.batch_size 512 is more than the 404 samples pruning.rate=0.7 leaves per epoch" in captured.err
    assert "achieved 0.70" in captured.out
    # A caller whose batch must stay as it is (the benchmark) can still ask for the refusal, naming the rate.
    from ssl_emp.pruning import Pruner

    with pytest.raises(ValueError, match="larger than the 404 samples .* the rate to at most 0.62 for this batch"):
        Pruner(1347, 4, rate=0.7).check_batch_size(512)


def test_a_batch_that_would_shrink_below_a_workable_size_is_refused_naming_the_rate_that_works(tmp_path, capsys):
    """200 samples at rate 0.9 leave 20 per epoch: too few for a batch the run picks by itself."""
    from ssl_emp.build import SMALLEST_FITTED_BATCH, build_trainer
    from ssl_emp.config import load_pretrain_config

    small = [
        *FAST,
        "data.subset=200",
        "train.epochs=12",
        "pruning.rate=0.9",
        "monitor.every=0",
        f"run.out_dir={tmp_path}",
    ]
    assert main([*small, "run.name=small"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.batch_size=200: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "pruning.rate=0.9 leaves 20 of the 200 samples per epoch, fewer than 32" in err
    rate = re.search(r"pruning.rate at most ([0-9.]*[0-9])", err).group(1)
    built = build_trainer(load_pretrain_config(None, [*small, f"pruning.rate={rate}"]), tmp_path / "fixed")
    assert built.settings.batch_size == SMALLEST_FITTED_BATCH == 32  # the highest rate it names leaves exactly enough
    # A batch that small, asked for, is the user's choice.
    asked = load_pretrain_config(None, [*small, "train.batch_size=20"])
    assert build_trainer(asked, tmp_path / "asked").settings.batch_size == 20
