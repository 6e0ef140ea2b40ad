"""Every part below the build step is built from plain keyword arguments, with no config object, as a user of
the library would: a method trained for a step in a hand-written loop, and the trainer run on hand-made parts."""

import pytest
import torch

from ssl_emp.data import ImageBank
from ssl_emp.data.augment import TwoViews
from ssl_emp.engine import Pretrainer, RunSettings, Schedules, TrainParts
from ssl_emp.engine.optim import WarmupCosine, build_optimizer
from ssl_emp.methods import BYOL, DINO, MoCo, SimCLR
from ssl_emp.models import build_backbone
from ssl_emp.pruning import Pruner
from ssl_emp.tracking import NullTracker


def _method(name: str):
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("small_cnn", in_channels=1, width=8)
    if name == "simclr":
        return SimCLR(backbone, feature_dim, proj_hidden_dim=32, proj_dim=16, temperature=0.2)
    if name == "byol":
        return BYOL(backbone, feature_dim, proj_hidden_dim=32, proj_dim=16, momentum=0.9)
    if name == "dino":
        return DINO(
            backbone,
            feature_dim,
            proj_hidden_dim=32,
            bottleneck_dim=16,
            proj_dim=64,
            momentum=0.9,
            teacher_temp=0.04,
            student_temp=0.1,
        )
    return MoCo(backbone, feature_dim, proj_hidden_dim=32, proj_dim=16, temperature=0.2, queue_size=64)


@pytest.mark.parametrize("name", ["simclr", "moco", "byol", "dino"])
def test_a_method_built_by_hand_trains_one_step_in_a_plain_loop(name):
    model = _method(name)
    views = TwoViews(8, 1, [0.5], [0.25], crop_scale_min=0.4, hflip_p=0.0)
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    pruner = Pruner(64, 2)
    indices, images = torch.arange(16), torch.rand(16, 1, 8, 8)
    before = [p.detach().clone() for p in model.backbone.parameters()]

    stats = model(*views(images))
    loss = pruner.step(indices, stats)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.on_step_end()

    assert stats.loss.shape == (16,) and bool(torch.isfinite(loss))
    assert loss.item() == pytest.approx(stats.loss.mean().item())  # full data: every weight is 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert pruner.sample_forwards == 16 and int((pruner.table.visits > 0).sum()) == 16
    if name in ("moco", "byol", "dino"):  # the teacher took its step towards the student
        teacher = model.backbone_momentum.parameters()
        assert any(not torch.equal(a, b) for a, b in zip(before, teacher))


def test_the_trainer_runs_on_parts_made_by_hand(tmp_path):
    torch.manual_seed(0)
    bank = ImageBank(
        torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8),
        torch.zeros(96, dtype=torch.long),
        num_classes=1,
        name="noise",
    )
    model = _method("simclr")
    views = TwoViews(8, 1, [0.5], [0.25], crop_scale_min=0.4, hflip_p=0.0)
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9)
    epochs = 4
    pruner = Pruner(len(bank), epochs, rate=0.5, selector="random", anneal=0.0)
    trainer = Pretrainer(
        TrainParts(bank, views, model, optimizer, pruner),
        Schedules(WarmupCosine(0.1, epochs, warmup_epochs=1)),
        RunSettings(tmp_path, epochs, batch_size=24, checkpoint_every=2),
    )
    result = trainer.run(NullTracker(), show_progress=False)

    # 1 full warm-up epoch, then 3 pruned epochs that skip 2/3 each: half of 4 epochs' forwards over the run
    assert result.sample_forwards == 96 + 3 * 32 and result.achieved_rate == pytest.approx(0.5)
    assert result.epochs_done == epochs and (tmp_path / "checkpoints" / "epoch_0004.pt").is_file()
    assert [round(h["pruning/epoch_kept_fraction"], 3) for h in result.history] == [1.0, 0.333, 0.333, 0.333]
