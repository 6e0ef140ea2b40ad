import pytest
import torch
import torchvision
from torch import nn

import ssl_emp
from ssl_emp.config import load_pretrain_config
from ssl_emp.build import pretrain
from ssl_emp.engine import CheckpointError
from ssl_emp.export import export_backbone
from ssl_emp.export import main as export_main


@pytest.fixture(scope="module")
def resnet_runs(tmp_path_factory):
    """One-epoch ResNet-18 runs on a few digits: with the stock stem and with the CIFAR stem."""
    out = tmp_path_factory.mktemp("resnet-runs")
    runs = {}
    for stem in (False, True):
        cfg = load_pretrain_config("configs/default.yaml", [
            "model.backbone=resnet18", f"model.cifar_stem={stem}", "model.proj_hidden_dim=32",
            "model.proj_output_dim=16", "data.subset=64", "data.image_size=32", "train.batch_size=32",
            "train.epochs=1", "tracking.wandb=disabled", "monitor.every=0", f"run.out_dir={out}",
            f"run.name=stem-{stem}"])
        runs[stem] = pretrain(cfg, show_progress=False).run_dir
    return runs


def test_exported_resnet_loads_into_an_unmodified_torchvision_model(resnet_runs, tmp_path):
    weights, meta = export_backbone(resnet_runs[False], tmp_path / "backbone.pt")
    state = torch.load(weights, weights_only=True)
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # digits are grayscale: one input channel
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert meta.is_file()


def test_cifar_stem_backbone_loads_strictly_once_the_stem_is_rebuilt(resnet_runs, tmp_path):
    weights, _ = export_backbone(resnet_runs[True], tmp_path / "backbone.pt")
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool, model.fc = nn.Identity(), nn.Identity()
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)


def test_load_backbone_gives_the_same_model_from_run_dir_and_export(resnet_runs, tmp_path):
    assert export_main(["--checkpoint", str(resnet_runs[True]), "--output", str(tmp_path / "b.pt")]) == 0
    from_run, from_export = ssl_emp.load_backbone(resnet_runs[True]), ssl_emp.load_backbone(tmp_path / "b.pt")
    assert isinstance(from_export, torchvision.models.ResNet) and not from_export.training
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert from_run(x).shape == (2, 512)
        assert torch.equal(from_run(x), from_export(x))


def test_load_backbone_explains_what_is_missing_or_wrong(resnet_runs, tmp_path):
    weights, meta = export_backbone(resnet_runs[False], tmp_path / "backbone.pt")
    meta.unlink()
    with pytest.raises(CheckpointError, match="not an ssl_emp checkpoint"):
        ssl_emp.load_backbone(weights)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        ssl_emp.load_backbone(tmp_path / "nothing.pt")
    # Weights from another architecture are refused with the mismatch named.
    other, _ = export_backbone(resnet_runs[True], tmp_path / "other.pt")
    (tmp_path / "other.json").write_text((tmp_path / "other.json").read_text().replace('"cifar_stem": true',
                                                                                       '"cifar_stem": false'))
    with pytest.raises(CheckpointError, match="do not fit"):
        ssl_emp.load_backbone(other)


def test_readme_reuse_script_runs_on_a_pretrained_run(tiny_run):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "examples/finetune_pretrained_backbone.py", str(tiny_run), "5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    top1 = float(done.stdout.strip().rsplit(" ", 1)[-1])
    assert 0.3 < top1 <= 1.0  # chance is 0.1
