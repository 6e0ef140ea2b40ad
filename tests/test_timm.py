"""Any timm model as a backbone: built by name at the data's size and channels, trained, exported and loaded
back into timm with the same features, and evaluated like any run; bad names and sizes get one line."""

import json

import pytest
import timm
import torch

import ssl_emp
from ssl_emp.build import pretrain
from ssl_emp.config import ConfigError, load_pretrain_config
from ssl_emp.export import export_backbone
from ssl_emp.models import build_backbone
from ssl_emp.pretrain import main

# A ViT small enough for CPU tests: timm's test_vit (64-d, 6 blocks) with 4 px patches on 16 px digits.
TINY_VIT = ["model.backbone=timm/test_vit", "model.timm_kwargs={patch_size: 4}", "data.image_size=16"]


def _features(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    "name, kwargs, size, dim",
    [
        ("timm/resnet18", {}, 8, 512),
        ("timm/test_vit", {"patch_size": 4}, 16, 64),
        ("timm/test_convnext", {}, 32, 64),
    ],
)
def test_a_timm_model_is_a_feature_extractor_at_the_datas_size_and_channels(name, kwargs, size, dim):
    model, feature_dim = build_backbone(name, 1, image_size=size, timm_kwargs=kwargs)
    assert feature_dim == dim == model.num_features and model.training
    assert _features(model, torch.rand(3, 1, size, size)).shape == (3, dim)
    assert model.num_classes == 0  # no classifier: the pooled features
    if "vit" in name:  # a ViT's position embedding is made for the data's size: one per 4 px patch, plus the class
        assert model.pos_embed.shape[1] == (size // 4) ** 2 + 1


def test_unknown_timm_names_get_one_line_naming_the_closest(capsys):
    with pytest.raises(ConfigError) as info:
        load_pretrain_config(None, ["model.backbone=timm/vit_smal_patch16_224"])
    message = str(info.value)
    assert "timm/vit_small_patch16_224" in message and "\n" not in message
    with pytest.raises(ConfigError, match="timm/<any timm model name>"):
        load_pretrain_config(None, ["model.backbone=vit"])
    tagged = "timm/resnet18.a1_in1k"  # a pretrained tag is part of a valid name
    assert load_pretrain_config(None, [f"model.backbone={tagged}"]).model.backbone == tagged


def test_a_model_timm_cannot_run_at_the_datas_size_is_one_line(tmp_path, capsys):
    """A ViT-Ti/16 on 8 px digits: timm builds it, but its 16 px patches do not fit the image."""
    code = main(
        [
            "model.backbone=timm/vit_tiny_patch16_224",
            "tracking.wandb=disabled",
            "monitor.every=0",
            f"run.out_dir={tmp_path}",
            "run.name=too-small",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([line for line in err if line.startswith("error:")]) == 1
    line = next(line for line in err if line.startswith("error:"))
    assert "vit_tiny_patch16_224" in line and "8 px" in line and "Traceback" not in "\n".join(err)
    with pytest.raises(ValueError, match="unexpected keyword argument 'patch_sise'"):
        build_backbone("timm/test_vit", 1, image_size=16, timm_kwargs={"patch_sise": 4})


def test_timm_settings_are_refused_for_other_backbones():
    with pytest.raises(ConfigError, match="model.timm_kwargs .*read only when model.backbone is timm/"):
        load_pretrain_config(None, ["model.timm_kwargs.patch_size=4"])
    with pytest.raises(ConfigError, match="model.pretrained_file"):
        load_pretrain_config(None, ["model.pretrained_file=weights.safetensors"])


def test_a_local_weights_file_starts_the_backbone_from_it(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=0, in_chans=1)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    loaded, _ = build_backbone("timm/resnet18", 1, image_size=16, pretrained_file=str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(_features(loaded, x), _features(source, x), atol=1e-6)
    with pytest.raises(ValueError, match="no weights file at"):
        build_backbone("timm/resnet18", 1, image_size=16, pretrained_file=str(tmp_path / "missing.safetensors"))


@pytest.fixture(scope="module")
def timm_runs(tmp_path_factory):
    """A few SimCLR steps on 64 digits with a tiny timm ViT (16 px) and with timm's ResNet-18 (8 px)."""
    out = tmp_path_factory.mktemp("timm-runs")
    runs = {}
    for name, model in (("vit", TINY_VIT), ("resnet18", ["model.backbone=timm/resnet18"])):
        cfg = load_pretrain_config(
            "configs/default.yaml",
            [
                *model,
                "model.proj_hidden_dim=32",
                "model.proj_output_dim=16",
                "data.subset=64",
                "train.batch_size=32",
                "train.epochs=2",
                "tracking.wandb=disabled",
                "monitor.every=0",
                f"run.out_dir={out}",
                f"run.name={name}",
            ],
        )
        runs[name] = pretrain(cfg, show_progress=False)
    return runs


def test_a_tiny_timm_vit_trains_simclr_steps_on_the_cpu(timm_runs):
    result = timm_runs["vit"]
    assert result.global_step == 4 and result.sample_forwards == 128
    losses = [h["train/epoch_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    ckpt = torch.load(result.checkpoint, weights_only=True)
    fresh, _ = build_backbone("timm/test_vit", 1, image_size=16, timm_kwargs={"patch_size": 4})
    trained = {k[len("backbone.") :]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    assert trained.keys() == fresh.state_dict().keys()  # timm's own keys
    torch.manual_seed(0)  # the seed the run used for its initial weights
    initial, _ = build_backbone("timm/test_vit", 1, image_size=16, timm_kwargs={"patch_size": 4})
    assert not torch.equal(trained["blocks.0.attn.qkv.weight"], initial.state_dict()["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("name, size", [("resnet18", 8), ("vit", 16)])
@pytest.mark.kernels("features of two loads of one backbone, within float tolerance")
def test_an_exported_timm_backbone_loads_back_into_timm_with_the_same_features(timm_runs, tmp_path, name, size):
    weights, meta = export_backbone(timm_runs[name].run_dir, tmp_path / "backbone.safetensors")
    arguments = json.loads(meta.read_text())["timm"]
    x = torch.rand(3, 1, size, size)
    source = _features(ssl_emp.load_backbone(timm_runs[name].run_dir), x)
    model = timm.create_model(**{**arguments, "pretrained_cfg_overlay": dict(file=str(weights))})
    torch.testing.assert_close(_features(model, x), source, atol=1e-5, rtol=0)
    assert arguments["pretrained"] and arguments["num_classes"] == 0 and arguments["in_chans"] == 1
    if name == "vit":
        assert arguments["img_size"] == 16 and arguments["patch_size"] == 4
    # the description's own overlay (input size, mean and std of the run) loads it too
    arguments["pretrained_cfg_overlay"]["file"] = str(weights)
    torch.testing.assert_close(_features(timm.create_model(**arguments), x), source, atol=1e-5, rtol=0)


def test_the_eval_commands_take_a_timm_run_and_its_export(timm_runs, tmp_path):
    from eval import knn, linear_probe

    run = timm_runs["vit"].run_dir
    probe = linear_probe.run(str(run), epochs=5, device="cpu", show_progress=False)
    floor = linear_probe.run(str(run), epochs=5, device="cpu", random_init=True, show_progress=False)
    assert probe["test_images"] == floor["test_images"] == 450 and probe["top1"] > 0.2  # chance is 0.1
    weights, _ = export_backbone(run, tmp_path / "vit.safetensors")
    assert knn.run(str(weights), device="cpu")["top1"] == knn.run(str(run), device="cpu")["top1"]


@pytest.mark.slow
def test_the_cpu_vit_recipe_runs_a_few_steps(tmp_path):
    """configs/dino_vit_tiny_digits.yaml, the GPU ViT recipe at CPU size: DINO, AdamW, weight decay on a cosine,
    gradient clipping, on a ViT-Ti with 4 px patches."""
    cfg = load_pretrain_config(
        "configs/dino_vit_tiny_digits.yaml",
        [
            "data.subset=32",
            "train.batch_size=16",
            "train.epochs=2",
            "monitor.every=0",
            "tracking.wandb=disabled",
            f"run.out_dir={tmp_path}",
            "run.name=vit",
        ],
    )
    assert cfg.optim.clip_grad and cfg.optim.weight_decay_end and cfg.model.backbone.startswith("timm/vit_")
    result = pretrain(cfg, show_progress=False)
    assert result.global_step == 4 and all(
        torch.isfinite(torch.tensor([h["train/epoch_loss"] for h in result.history]))
    )
    ckpt = torch.load(result.checkpoint, weights_only=True)
    decays = [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]]
    assert 0.04 < decays[0] < 0.4 and decays[1] == 0.0  # the last step's weight decay, on its way up


def test_local_crops_a_fixed_size_vit_cannot_take_are_one_line():
    from ssl_emp.build import build_method

    crops = ["method.name=dino", "augment.local_crops=2", "augment.local_crop_size=8", "data.image_size=16"]
    vit = "model.backbone=timm/vit_tiny_patch16_224"  # a fixed input size, unlike timm's test_vit
    with pytest.raises(ValueError, match="8 px local crops .*dynamic_img_size=true"):
        build_method(load_pretrain_config(None, [vit, "model.timm_kwargs={patch_size: 4}", *crops]), in_channels=1)
    dynamic = "model.timm_kwargs={patch_size: 4, dynamic_img_size: true}"
    model = build_method(load_pretrain_config(None, [vit, dynamic, *crops]), in_channels=1)
    stats = model(torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16), local_views=[torch.rand(4, 1, 8, 8)] * 2)
    assert stats.loss.shape == (4,)
