import json
import shutil

import pytest
import torch

from eval.linear_probe import linear_probe
from ssl_emp.build import pretrain
from ssl_emp.checkpoint import atomic_save
from ssl_emp.config import ConfigError, load_pretrain_config
from ssl_emp.engine import CheckpointError, RunDirError, load_checkpoint
from ssl_emp.engine.optim import WarmupCosine
from ssl_emp.methods import METHODS
from ssl_emp.pretrain import main


def _cfg(overrides, *extra):
    return load_pretrain_config("configs/default.yaml", [*overrides, *extra])


def test_tiny_pretrain_then_probe_end_to_end(tiny_overrides):
    result = pretrain(_cfg(tiny_overrides), show_progress=False)
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "epoch_0001.pt").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "train/epoch_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(r["train/images_per_second"] > 0 and r["train/epoch_seconds"] > 0 for r in epochs)
    assert any("train/lr" in r and "train/loss" in r for r in records)
    assert result.global_step == 2 * 11  # 1,347 images in 11 near-equal batches of about 128
    probe = linear_probe(str(run_dir), epochs=20)
    assert probe["top1"] > 0.3  # far above chance (0.1) even after two epochs
    assert probe["top5"] >= probe["top1"] and probe["train_images"] == 1347 and probe["test_images"] == 450


# What a method needs in a seconds-long run; a method not named needs nothing, and every entry of METHODS is run.
_RESUME_SETTINGS = {
    "moco": ["method.queue_size=256"],
    "dino": ["method.bottleneck_dim=16", "method.teacher_temp_warmup_epochs=3", "method.warmup_teacher_temp=0.02"],
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.kernels("a resumed run retraces the uninterrupted one's float ops")
def test_resume_continues_step_count_schedule_and_weights(tiny_overrides, tmp_path, method):
    overrides = [
        *tiny_overrides,
        "train.epochs=4",
        "train.checkpoint_every=2",
        f"method.name={method}",
        *_RESUME_SETTINGS.get(method, []),
    ]
    full = pretrain(_cfg(overrides), show_progress=False)
    final = load_checkpoint(full.checkpoint)

    # The same run, stopped after epoch 2: its last checkpoint is the epoch-2 one.
    shutil.copytree(full.run_dir, tmp_path / "runs" / "cut")
    cut = tmp_path / "runs" / "cut" / "checkpoints"
    shutil.copy(cut / "epoch_0002.pt", cut / "last.pt")
    resumed = pretrain(_cfg(overrides, "run.name=cut", "run.resume=true"), show_progress=False)
    after = load_checkpoint(resumed.checkpoint)

    assert after["epoch"] == final["epoch"] == 4
    assert after["global_step"] == final["global_step"] == full.global_step
    assert [r["epoch"] for r in resumed.history] == [3, 4]
    assert resumed.history[-1]["train/epoch_loss"] == pytest.approx(full.history[-1]["train/epoch_loss"], rel=1e-5)
    assert resumed.history[-1]["train/lr"] == pytest.approx(full.history[-1]["train/lr"])
    # MoCo's queue, the teachers, DINO's center and the schedules' position (_extra_state) included
    for key, value in final["model"].items():
        assert torch.allclose(after["model"][key].float(), value.float(), atol=1e-5), key
    if method in ("byol", "dino"):
        assert 0.95 < float(after["model"]["_extra_state"]) < 1.0  # the last step started just before the end


def test_lr_schedule_warms_up_then_decays():
    schedule = WarmupCosine(lr=1.0, epochs=10, warmup_epochs=1)
    lrs = [schedule(step / 10) for step in range(101)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.0)


def test_existing_run_dir_needs_resume(tiny_overrides):
    pretrain(_cfg(tiny_overrides, "train.epochs=1"), show_progress=False)
    with pytest.raises(RunDirError, match="run.resume=true"):
        pretrain(_cfg(tiny_overrides, "train.epochs=1"), show_progress=False)


def test_resume_without_checkpoint_is_explained(tiny_overrides):
    with pytest.raises(RunDirError, match="no checkpoints/last.pt"):
        pretrain(_cfg(tiny_overrides, "run.resume=true"), show_progress=False)


def test_resume_auto_starts_a_run_and_the_same_command_goes_on_where_it_stopped(tiny_overrides, tmp_path, capsys):
    """What a requeued job does: run its command again. ``--resume auto`` (run.resume=auto) starts the run where
    there is none, and resumes it from its last checkpoint where there is one."""
    command = ["--resume", "auto", *tiny_overrides, "train.epochs=4", "train.checkpoint_every=2", "train.device=cpu"]
    assert main(command) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "tiny"
    assert f"Starting {run_dir} (run.resume=auto: no checkpoint there yet)" in out and "Resuming" not in out
    whole = load_checkpoint(run_dir)
    # As if the job had been stopped after epoch 2: its last checkpoint is the epoch-2 one.
    shutil.copy(run_dir / "checkpoints" / "epoch_0002.pt", run_dir / "checkpoints" / "last.pt")
    assert main(command) == 0
    out = capsys.readouterr().out
    assert f"Resuming {run_dir} at epoch 2 (step 22)" in out and "Done: 4 epochs, 44 steps" in out
    again = load_checkpoint(run_dir)
    for key, value in whole["model"].items():
        assert torch.allclose(again["model"][key].float(), value.float(), atol=1e-5), key


def test_resume_auto_needs_a_run_name_and_resume_takes_true_false_or_auto(tmp_path, capsys):
    assert main(["--resume", "auto", f"run.out_dir={tmp_path}"]) == 2
    assert "run.resume=auto resumes the run named by run.name" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="run.resume is true, false or auto"):
        load_pretrain_config(None, ["run.resume=maybe"])
    assert load_pretrain_config(None, ["run.resume=true"]).run.resume is True
    assert load_pretrain_config(None, ["run.resume=auto", "run.extend=true"]).run.extend  # read when resuming


def test_batch_larger_than_the_dataset_shrinks_to_it_with_a_note(tiny_overrides, capsys):
    result = pretrain(_cfg(tiny_overrides, "train.batch_size=5000", "train.epochs=1"), show_progress=False)
    assert "train.batch_size 5000 is more than the 1347 images there are; using 1347" in capsys.readouterr().err
    assert result.global_step == 1 and result.sample_forwards == 1347  # the whole set in one batch


def test_corrupt_and_foreign_checkpoints_are_explained(tmp_path):
    truncated = tmp_path / "truncated.pt"
    atomic_save({"format": "ssl_emp.checkpoint/1", "model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an ssl_emp checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ssl_emp.checkpoint/1", "payload": shutil.copy}, path)  # a pickled callable
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)


def test_wandb_offline_run_is_written(tiny_overrides, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = pretrain(_cfg(tiny_overrides, "train.epochs=1", "tracking.wandb=auto"), show_progress=False)
    offline_runs = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    assert (result.run_dir / "wandb_run_id").is_file()


def test_cli_missing_dataset_is_one_clear_error(tmp_path, capsys):
    code = main(["data.name=cifar10", f"data.root={tmp_path}", f"run.out_dir={tmp_path}", "tracking.wandb=disabled"])
    err = capsys.readouterr().err
    assert code == 2 and "cifar-10-python.tar.gz" in err and "Traceback" not in err


@pytest.mark.slow
def test_default_recipe_reaches_090_and_beats_random_backbone(tmp_path):
    """The README's claim: the embedded default run, probed, reaches top-1 >= 0.90; a random backbone does not.
    The thresholds hold across CPU kernels and thread counts, which change the run's numbers: measured (torch
    2.14.1) 0.978 against 0.880 with AVX512 kernels and 2 threads, 0.984 with ATEN_CPU_CAPABILITY=default and 2
    threads, 0.978 with default and 1 thread."""
    cfg = load_pretrain_config(
        "configs/default.yaml", ["tracking.wandb=disabled", f"run.out_dir={tmp_path}", "run.name=default"]
    )
    result = pretrain(cfg, show_progress=False)
    pretrained = linear_probe(str(result.run_dir))["top1"]
    random_init = linear_probe(str(result.run_dir), random_init=True)["top1"]
    assert pretrained >= 0.90
    assert pretrained - random_init >= 0.05, (pretrained, random_init)


@pytest.mark.slow
def test_moco_with_emp_at_rate_half_beats_random_backbone(tmp_path):
    """Issue 4's claim: MoCo + EMP at rate 0.5 on the embedded default probes clearly above a random backbone.
    Measured (torch 2.14.1): 0.958 against 0.880 with AVX512 kernels or ATEN_CPU_CAPABILITY=default on 2 threads,
    0.962 with default on 1 thread; the thresholds leave more than five times that spread."""
    cfg = load_pretrain_config(
        "configs/moco_digits.yaml",
        [
            "pruning.scorer=emp",
            "pruning.selector=infobatch",
            "pruning.rate=0.5",
            "monitor.every=0",
            "tracking.wandb=disabled",
            f"run.out_dir={tmp_path}",
            "run.name=moco",
        ],
    )
    result = pretrain(cfg, show_progress=False)
    assert result.achieved_rate == pytest.approx(0.5, abs=0.005)
    pretrained = linear_probe(str(result.run_dir))["top1"]
    random_init = linear_probe(str(result.run_dir), random_init=True)["top1"]
    assert pretrained >= 0.92 and pretrained - random_init >= 0.04, (pretrained, random_init)


def test_resume_with_new_epochs_is_refused_unless_extended(tiny_overrides):
    """A new train.epochs on resume moves the cosine schedule, the annealing window and the per-epoch rate;
    refused with what would shift, and allowed, saying so, with run.extend=true."""
    overrides = [
        *tiny_overrides,
        "train.epochs=4",
        "pruning.rate=0.3",
        "pruning.selector=random",
        "pruning.anneal=0.25",
    ]
    first = pretrain(_cfg(overrides), show_progress=False)
    with pytest.raises(RunDirError, match="run.extend=true") as refused:
        pretrain(_cfg(overrides, "train.epochs=8", "run.resume=true"), show_progress=False)
    message = str(refused.value)
    assert "train.epochs=4" in message and "learning rate at epoch 4" in message
    assert "annealing epochs move from 4-4 to 7-8" in message
    assert "each pruned epoch skips 0.480 of the data, not 0.600" in message
    assert load_checkpoint(first.checkpoint)["epoch"] == 4  # nothing was touched

    extended = pretrain(_cfg(overrides, "train.epochs=8", "run.resume=true", "run.extend=true"), show_progress=False)
    assert [r["epoch"] for r in extended.history] == [5, 6, 7, 8]
    # Epochs 5-6 are pruned at the 8-epoch run's per-epoch rate, 7-8 are the new annealing window.
    kept = [r["pruning/epoch_kept_fraction"] for r in extended.history]
    assert kept == [pytest.approx(0.52, abs=0.002)] * 2 + [1.0, 1.0]


def _lr_by_compute(tmp_path, name: str, epochs: int = 8, max_forwards=None, **pruning):
    """One short run on hand-made parts: ``(fraction of the run's compute done before each step, the learning rate
    the optimizer stepped with)``, read from the optimizer and the pruner's count, and the forwards spent."""
    from ssl_emp.data import ImageBank
    from ssl_emp.data.augment import TwoViews
    from ssl_emp.engine import Pretrainer, RunSettings, Schedules, TrainParts
    from ssl_emp.engine.optim import build_optimizer
    from ssl_emp.methods import SimCLR
    from ssl_emp.models import build_backbone
    from ssl_emp.pruning import Pruner
    from ssl_emp.tracking import NullTracker

    torch.manual_seed(0)
    bank = ImageBank(
        torch.randint(0, 256, (120, 1, 8, 8), dtype=torch.uint8),
        torch.zeros(120, dtype=torch.long),
        num_classes=1,
        name="noise",
    )
    backbone, dim = build_backbone("small_cnn", in_channels=1, width=8)
    model = SimCLR(backbone, dim, proj_hidden_dim=16, proj_dim=8)
    optimizer = build_optimizer(model, "sgd", lr=1.0)
    pruner = Pruner(len(bank), epochs, **pruning)
    steps = []
    optimizer.register_step_pre_hook(lambda opt, *_: steps.append((pruner.sample_forwards, opt.param_groups[0]["lr"])))
    trainer = Pretrainer(
        TrainParts(bank, TwoViews(8, 1, [0.5], [0.25]), model, optimizer, pruner),
        Schedules(WarmupCosine(1.0, epochs, warmup_epochs=1)),
        RunSettings(tmp_path / name, epochs, batch_size=20, checkpoint_every=100, max_forwards=max_forwards),
    )
    result = trainer.run(NullTracker(), show_progress=False)
    return [(done / result.sample_forwards, lr) for done, lr in steps], result


def test_runs_at_different_rates_see_the_same_learning_rate_at_the_same_fraction_of_compute(tmp_path):
    """The schedule follows the compute: full data, a pruned run (full warm-up and annealing epochs included)
    and all the data cut to the pruned run's compute walk one curve per unit of compute, and end it together."""
    full, _ = _lr_by_compute(tmp_path, "full")
    pruned, spent = _lr_by_compute(tmp_path, "pruned", rate=0.5, selector="random", anneal=0.2)
    equal, equal_spent = _lr_by_compute(tmp_path, "equal", max_forwards=spent.sample_forwards)
    curve = WarmupCosine(1.0, 8, warmup_epochs=1)
    for steps in (full, pruned, equal):
        assert [lr for _, lr in steps] == pytest.approx([curve(8 * fraction) for fraction, _ in steps], abs=1e-9)
        assert steps[-1][0] > 0.8  # the last step starts near the end of the compute: the curve is walked whole
    # Epoch-indexed, the pruned run's steps in its annealing epoch would sit at the curve's cold tail; by compute
    # they sit where full data's do.
    assert len(pruned) < len(full) and len(equal) < len(full)


def test_equal_compute_spends_exactly_the_pruned_runs_forwards(tmp_path):
    _, pruned = _lr_by_compute(tmp_path, "pruned", rate=0.7, selector="random", anneal=0.0)
    _, equal = _lr_by_compute(tmp_path, "equal", max_forwards=pruned.sample_forwards)
    assert equal.sample_forwards == pruned.sample_forwards  # its last epoch is cut short, not rounded
    assert equal.achieved_rate != pytest.approx(0.0) and equal.epochs_done < 8
    assert (tmp_path / "equal" / "checkpoints" / "last.pt").is_file()  # the early end still saves


def test_weight_decay_follows_its_cosine_gradients_are_clipped_and_the_method_sees_the_progress(tmp_path):
    """The ViT recipe's knobs: weight decay on a cosine over the compute (the decayed group only), the global
    gradient norm capped before each step, and the run's progress handed to the method before each step."""
    from ssl_emp.data import ImageBank
    from ssl_emp.data.augment import TwoViews
    from ssl_emp.engine import Pretrainer, RunSettings, Schedules, TrainParts
    from ssl_emp.engine.optim import CosineRamp, build_optimizer
    from ssl_emp.methods import SimCLR
    from ssl_emp.models import build_backbone
    from ssl_emp.pruning import Pruner
    from ssl_emp.tracking import NullTracker

    torch.manual_seed(0)
    bank = ImageBank(
        torch.randint(0, 256, (60, 1, 8, 8), dtype=torch.uint8),
        torch.zeros(60, dtype=torch.long),
        num_classes=1,
        name="noise",
    )
    backbone, dim = build_backbone("small_cnn", in_channels=1, width=8)
    model = SimCLR(backbone, dim, proj_hidden_dim=16, proj_dim=8)
    progress = []
    model.set_progress = progress.append
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.04)
    steps = []

    def record(opt, *_):
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        steps.append(([g["weight_decay"] for g in opt.param_groups], norm.item()))

    optimizer.register_step_pre_hook(record)
    epochs = 4
    trainer = Pretrainer(
        TrainParts(bank, TwoViews(8, 1, [0.5], [0.25]), model, optimizer, Pruner(len(bank), epochs)),
        Schedules(WarmupCosine(1e-3, epochs), weight_decay=CosineRamp(0.04, 0.4, epochs), clip_grad=1e-3),
        RunSettings(tmp_path, epochs, batch_size=20, checkpoint_every=100),
    )
    trainer.run(NullTracker(), show_progress=False)
    assert progress == pytest.approx([step / 12 for step in range(12)])  # 3 steps an epoch, before each step
    ramp = CosineRamp(0.04, 0.4, epochs)
    assert [decays[0] for decays, _ in steps] == pytest.approx([ramp(epochs * f) for f in progress])
    assert all(decays[1] == 0.0 for decays, _ in steps)  # biases and norms stay undecayed
    assert steps[0][0][0] == pytest.approx(0.04) and ramp(epochs) == pytest.approx(0.4)
    assert all(norm <= 1e-3 * (1 + 1e-4) for _, norm in steps)  # every step clipped (raw norms are far larger)
