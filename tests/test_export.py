import json

import pytest
import torch
import torchvision
from torch import nn

import ssl_emp
from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.engine import CheckpointError
from ssl_emp.export import export_backbone
from ssl_emp.export import main as export_main
from ssl_emp.models import torchvision_resnet


@pytest.fixture(scope="module")
def resnet_runs(tmp_path_factory):
    """One-epoch ResNet-18 runs on a few digits: with the stock stem and with the CIFAR stem."""
    out = tmp_path_factory.mktemp("resnet-runs")
    runs = {}
    for stem in (False, True):
        cfg = load_pretrain_config(
            "configs/default.yaml",
            [
                "model.backbone=resnet18",
                f"model.cifar_stem={stem}",
                "model.proj_hidden_dim=32",
                "model.proj_output_dim=16",
                "data.subset=64",
                "data.image_size=32",
                "train.batch_size=32",
                "train.epochs=1",
                "tracking.wandb=disabled",
                "monitor.every=0",
                f"run.out_dir={out}",
                f"run.name=stem-{stem}",
            ],
        )
        runs[stem] = pretrain(cfg, show_progress=False).run_dir
    return runs


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("cifar_stem", [False, True])
def test_safetensors_export_loads_strictly_into_the_torchvision_builder(resnet_runs, tmp_path, cifar_stem):
    """The found bug: the digits ResNet-18 would not load into a stock torchvision model. The builder makes the
    stem the description names, and the weights load with strict=True and give the source backbone's features."""
    from safetensors.torch import load_file

    weights, meta = export_backbone(resnet_runs[cifar_stem], tmp_path / "backbone.safetensors")
    description = json.loads(meta.read_text())
    assert description["torchvision"] == (
        f"ssl_emp.models.torchvision_resnet('resnet18', in_channels=1, cifar_stem={cifar_stem})"
    )
    model = torchvision_resnet("resnet18", in_channels=description["in_channels"], cifar_stem=cifar_stem)
    model.load_state_dict(load_file(weights), strict=True)
    x = torch.rand(3, 1, 32, 32)
    assert torch.allclose(_features(model, x), _features(ssl_emp.load_backbone(resnet_runs[cifar_stem]), x))
    with pytest.raises(RuntimeError, match="conv1.weight"):  # the other stem does not fit: the builder matters
        torchvision_resnet("resnet18", in_channels=1, cifar_stem=not cifar_stem).load_state_dict(load_file(weights))


def test_timm_loads_the_export_through_pretrained_cfg_overlay(resnet_runs, tmp_path):
    timm = pytest.importorskip("timm")
    weights, meta = export_backbone(resnet_runs[False], tmp_path / "backbone.safetensors")
    x = torch.rand(3, 1, 32, 32)
    source = _features(ssl_emp.load_backbone(resnet_runs[False]), x)
    model = timm.create_model(
        "resnet18", pretrained=True, num_classes=0, in_chans=1, pretrained_cfg_overlay=dict(file=str(weights))
    )
    assert torch.allclose(_features(model, x), source, atol=1e-5)
    # The description's arguments (with the run's input size, mean and std for timm's data config) load it too.
    arguments = json.loads(meta.read_text())["timm"]
    arguments["pretrained_cfg_overlay"]["file"] = str(weights)
    model = timm.create_model(**arguments)
    assert list(model.pretrained_cfg["mean"]) == json.loads(meta.read_text())["mean"]
    assert torch.allclose(_features(model, x), source, atol=1e-5)
    # timm has no ResNet with the CIFAR stem: the export says so instead of giving arguments that would fail.
    _, cifar_meta = export_backbone(resnet_runs[True], tmp_path / "cifar.safetensors")
    assert json.loads(cifar_meta.read_text())["timm"] is None


def test_load_backbone_gives_the_same_model_from_run_dir_and_export(resnet_runs, tmp_path):
    assert export_main(["--checkpoint", str(resnet_runs[True]), "--output", str(tmp_path / "b.pt")]) == 0
    from_run, from_export = ssl_emp.load_backbone(resnet_runs[True]), ssl_emp.load_backbone(tmp_path / "b.pt")
    assert isinstance(from_export, torchvision.models.ResNet) and not from_export.training
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert from_run(x).shape == (2, 512)
        assert torch.equal(from_run(x), from_export(x))
    # A safetensors export carries its description in its header: it loads with the .json beside it gone.
    weights, meta = export_backbone(resnet_runs[True], tmp_path / "b.safetensors")
    meta.unlink()
    with torch.no_grad():
        assert torch.equal(from_run(x), ssl_emp.load_backbone(weights)(x))


def test_eval_commands_take_an_exported_backbone_as_they_take_its_run(tiny_run, tmp_path, capsys):
    """The found bug: ``eval.knn --checkpoint <exported backbone>`` answered "not an ssl_emp checkpoint"."""
    from eval.knn import knn_eval
    from eval.knn import main as knn_main

    weights, _ = export_backbone(tiny_run, tmp_path / "backbone.safetensors")
    from_run, from_export = knn_eval(str(tiny_run), device="cpu"), knn_eval(str(weights), device="cpu")
    assert from_export["top1"] == from_run["top1"] > 0.3  # chance is 0.1
    assert from_export["pretrained_on"] == "digits"
    output = tmp_path / "knn.json"
    assert knn_main(["--checkpoint", str(weights), "--device", "cpu", "--no-wandb", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["top1"] == from_run["top1"]
    # Without --output the record goes beside the export, not into whatever folder holds the export's folder.
    assert knn_main(["--checkpoint", str(weights), "--device", "cpu", "--no-wandb"]) == 0
    assert json.loads((tmp_path / "eval" / "backbone_safetensors_knn.json").read_text())["top1"] == from_run["top1"]


def test_load_backbone_explains_what_is_missing_or_wrong(resnet_runs, tmp_path):
    weights, meta = export_backbone(resnet_runs[False], tmp_path / "backbone.pt")
    meta.unlink()
    with pytest.raises(CheckpointError, match="not an ssl_emp checkpoint"):
        ssl_emp.load_backbone(weights)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        ssl_emp.load_backbone(tmp_path / "nothing.pt")
    # Weights from another architecture are refused with the mismatch named.
    other, _ = export_backbone(resnet_runs[True], tmp_path / "other.pt")
    (tmp_path / "other.json").write_text(
        (tmp_path / "other.json").read_text().replace('"cifar_stem": true', '"cifar_stem": false')
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        ssl_emp.load_backbone(other)


def test_readme_reuse_script_runs_on_a_pretrained_run(tiny_run):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "examples/finetune_pretrained_backbone.py", str(tiny_run), "--epochs", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    top1 = float(done.stdout.strip().rsplit(" ", 1)[-1])
    assert 0.3 < top1 <= 1.0  # chance is 0.1
