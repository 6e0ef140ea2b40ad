"""The one-call Python API (ssl_emp.train), the package staying light to import, and the console scripts."""

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
import yaml

import ssl_emp
from ssl_emp.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    epochs=4,
    batch_size=128,
    model={"width": 8, "proj_hidden_dim": 32, "proj_output_dim": 16},
    wandb="disabled",
    monitor={"every": 0},
    show_progress=False,
)


def test_train_returns_the_run_its_final_metrics_and_backbone(tmp_path):
    out = tmp_path / "runs" / "api"
    run = ssl_emp.train(out=out, data="digits", pruning={"rate": 0.3}, **TINY)
    assert run.run_dir == out and run.checkpoint == out / "checkpoints" / "last.pt" and run.checkpoint.is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["data"]["name"], saved["model"]["width"], saved["pruning"]["rate"]) == ("digits", 8, 0.3)
    assert run.metrics["epoch"] == 4 and math.isfinite(run.metrics["final_loss"])
    assert run.metrics["pruning/sample_forwards"] == run.result.sample_forwards < 4 * 1347  # pruned
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert run.backbone(x).shape == (4, 16)
        assert torch.equal(run.backbone(x), ssl_emp.load_backbone(out)(x))
    # resume=True continues the run in out with its own settings, here extended by one epoch.
    resumed = ssl_emp.train(out=out, resume=True, epochs=5, overrides=["run.extend=true"], show_progress=False)
    assert resumed.metrics["epoch"] == 5 and resumed.run_dir == out
    # resume="auto" with the first call's settings: there is a checkpoint, so it goes on from it (here, done).
    again = ssl_emp.train(
        out=out,
        data="digits",
        pruning={"rate": 0.3},
        resume="auto",
        **{**TINY, "epochs": 5},
        overrides=["run.extend=true"],
    )
    assert again.metrics["epochs"] == 5 and again.result.global_step == resumed.result.global_step


def test_train_refuses_bad_input_with_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown keyword 'epoch'.*epochs"):
        ssl_emp.train(out=tmp_path / "r", data="digits", epoch=2)
    with pytest.raises(ConfigError, match="neither a dataset name .* nor a folder"):
        ssl_emp.train(out=tmp_path / "r", data=tmp_path / "no-such-folder")
    with pytest.raises(ConfigError, match="model.backbone"):
        ssl_emp.train(out=tmp_path / "r", data="digits", model="resnet99")
    with pytest.raises(ConfigError, match="has no config.yaml"):
        ssl_emp.train(out=tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="resume='auto' needs out="):
        ssl_emp.train(data="digits", resume="auto")
    with pytest.raises(ConfigError, match="resume='yes': give True, False or 'auto'"):
        ssl_emp.train(out=tmp_path / "r", resume="yes")


def test_import_ssl_emp_stays_light():
    code = (
        "import sys, ssl_emp; heavy = [m for m in ('torch', 'wandb', 'pydantic') if m in sys.modules]; "
        "print(heavy); ssl_emp.train; print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"]  # nothing heavy until train is asked for


def test_console_scripts_point_at_the_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {
        "ssl-emp-pretrain",
        "ssl-emp-probe",
        "ssl-emp-knn",
        "ssl-emp-finetune",
        "ssl-emp-export",
        "ssl-emp-plot",
    } <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0, name


def test_train_takes_a_folder_of_images(tmp_path):
    from PIL import Image

    for i in range(32):
        (tmp_path / "images" / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (8 * i, 255 - 8 * i, 100)).save(tmp_path / "images" / "train" / "a" / f"{i}.png")
    run = ssl_emp.train(
        out=tmp_path / "run", data=tmp_path / "images", image_size=16, **{**TINY, "epochs": 1, "batch_size": 16}
    )
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())["data"]
    assert (saved["name"], saved["root"], saved["image_size"]) == ("imagefolder", str(tmp_path / "images"), 16)
    assert run.metrics["train/samples_seen"] == 32
