"""BYOL and DINO: their per-sample losses against lightly's, the momentum teacher and its schedule, DINO's
center and temperatures, multi-crop, and pruning runs with each."""

import math

import pytest
import torch
from lightly.loss import DINOLoss, NegativeCosineSimilarity

from ssl_emp.build import build_method, pretrain
from ssl_emp.config import ConfigError, load_pretrain_config
from ssl_emp.methods import BYOL, DINO
from ssl_emp.methods.losses import per_sample_dino_with_entropy, per_sample_negative_cosine
from ssl_emp.models import build_backbone
from ssl_emp.pruning import Pruner
from ssl_emp.pruning.scorers import MEMORY_FORMS

TINY_DINO = ["method.name=dino", "method.bottleneck_dim=16"]


def _byol(**kwargs):
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn", in_channels=1, width=8)
    return BYOL(backbone, dim, proj_hidden_dim=32, proj_dim=16, **kwargs)


def _dino(**kwargs):
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn", in_channels=1, width=8)
    settings = dict(proj_hidden_dim=32, bottleneck_dim=16, proj_dim=64, head_batchnorm=True, **kwargs)
    return DINO(backbone, dim, **settings)


@pytest.mark.kernels("our per-sample losses against lightly's, within float tolerance")
def test_per_sample_negative_cosine_mean_is_lightlys_byol_loss():
    torch.manual_seed(0)
    p0, p1, t0, t1 = (torch.randn(6, 8) for _ in range(4))
    loss = per_sample_negative_cosine(p0, p1, t0, t1)
    criterion = NegativeCosineSimilarity()
    assert loss.shape == (6,)
    assert loss.mean().item() == pytest.approx((0.5 * (criterion(p0, t1) + criterion(p1, t0))).item(), abs=1e-5)
    # each sample's own: its two predictions against the other view's targets
    assert loss[2].item() == pytest.approx(
        -0.5 * (torch.cosine_similarity(p0[2], t1[2], dim=0) + torch.cosine_similarity(p1[2], t0[2], dim=0)).item(),
        abs=1e-6,
    )


@pytest.mark.kernels("our per-sample losses against lightly's, within float tolerance")
def test_the_byol_methods_per_sample_loss_is_lightlys_loss_on_its_own_outputs():
    model = _byol()
    x0, x1 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    stats = model(x0, x1)
    with torch.no_grad():  # the same forward, step by step, as lightly's BYOL example writes it
        z = model.projection_head(model.backbone(torch.cat([x0, x1])))
        p0, p1 = model.prediction_head(z).chunk(2)
        t0, t1 = model.projection_head_momentum(model.backbone_momentum(torch.cat([x0, x1]))).chunk(2)
    criterion = NegativeCosineSimilarity()
    expected = 0.5 * (criterion(p0, t1) + criterion(p1, t0))
    assert stats.loss.mean().item() == pytest.approx(expected.item(), abs=1e-5)
    assert stats.loss.requires_grad and stats.embedding.shape == (8, 16) and not stats.agreement.requires_grad
    assert torch.equal(stats.chance_loss, torch.zeros(8))


@pytest.mark.parametrize("student_views", [2, 5], ids=["two-views", "multi-crop"])
@pytest.mark.kernels("our per-sample losses against lightly's, within float tolerance")
def test_per_sample_dino_mean_is_lightlys_dino_loss(student_views):
    torch.manual_seed(0)
    teacher = [torch.randn(6, 32) for _ in range(2)]
    student = [torch.randn(6, 32) for _ in range(student_views)]
    criterion = DINOLoss(32, teacher_temp=0.05, student_temp=0.1)
    criterion.center.copy_(torch.randn(1, 1, 32))
    loss, entropy = per_sample_dino_with_entropy(teacher, student, criterion.center, 0.05, 0.1)
    assert loss.shape == entropy.shape == (6,)
    assert loss.mean().item() == pytest.approx(criterion(teacher, student, teacher_temp=0.05).item(), abs=1e-5)
    assert bool((entropy > 0).all()) and bool((entropy <= math.log(32) + 1e-5).all())


@pytest.mark.kernels("our per-sample losses against lightly's, within float tolerance")
def test_the_dino_methods_loss_is_lightlys_and_its_center_moves_once_per_step():
    model = _dino(teacher_temp=0.05, student_temp=0.1, center_momentum=0.8)
    model.train()
    x0, x1 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    criterion = DINOLoss(64, teacher_temp=0.05, student_temp=0.1, center_momentum=0.8)
    criterion.center.copy_(torch.randn(1, 1, 64))
    model.criterion.center.copy_(criterion.center)
    stats = model(x0, x1)
    with torch.no_grad():
        student = list(model.projection_head(model.backbone(torch.cat([x0, x1]))).chunk(2))
        teacher = list(model.projection_head_momentum(model.backbone_momentum(torch.cat([x0, x1]))).chunk(2))
    # lightly's loss reads the center, then updates it: the method's center after one forward is lightly's
    expected = criterion(teacher, student)
    assert stats.loss.mean().item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(model.criterion.center, criterion.center)
    assert stats.chance_loss[0].item() == pytest.approx(math.log(64)) and stats.embedding.shape == (8, 16)
    # evaluation leaves the center alone
    before = model.criterion.center.clone()
    model.eval()(x0, x1)
    assert torch.equal(model.criterion.center, before)


def test_dino_multi_crop_local_views_reach_the_student_only():
    model = _dino()
    x0, x1 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    local = [torch.rand(8, 1, 4, 4) for _ in range(3)]
    seen = []
    hook = model.backbone_momentum.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[-1]))
    with_local = model(x0, x1, local_views=local)
    hook.remove()
    assert seen == [8]  # the teacher saw the two global views only
    criterion = DINOLoss(64)
    with torch.no_grad():
        model.criterion.center.zero_()
        student = list(model.projection_head(model.backbone(torch.cat([x0, x1]))).chunk(2))
        student += list(model.projection_head(model.backbone(torch.cat(local))).chunk(3))
        teacher = list(model.projection_head_momentum(model.backbone_momentum(torch.cat([x0, x1]))).chunk(2))
        model.criterion.center.zero_()
        again = model(x0, x1, local_views=local)
    assert again.loss.mean().item() == pytest.approx(criterion(teacher, student).item(), abs=1e-5)
    assert with_local.loss.shape == (8,)


def test_the_teachers_momentum_rises_on_a_cosine_and_the_update_uses_it(assert_ema_step):
    model = _byol(momentum=0.9, momentum_end=1.0)
    quarter = 1.0 - 0.1 * (1 + math.cos(math.pi / 4)) / 2
    for fraction, expected in ((0.0, 0.9), (0.5, 0.95), (1.0, 1.0), (0.25, quarter)):
        model.set_progress(fraction)
        assert model.current_momentum() == pytest.approx(expected)
    model.set_progress(0.5)
    assert_ema_step(model, 0.95)
    assert all(not p.requires_grad for p in model.backbone_momentum.parameters())
    assert all(not p.requires_grad for p in _dino().projection_head_momentum.parameters())


def test_the_schedules_position_travels_with_the_weights():
    model = _dino(teacher_temp=0.07, warmup_teacher_temp=0.03, teacher_temp_warmup=0.5)
    model.set_progress(0.25)
    assert model.current_teacher_temp() == pytest.approx(0.05)  # halfway through the warm-up
    fresh = _dino(teacher_temp=0.07, warmup_teacher_temp=0.03, teacher_temp_warmup=0.5)
    assert fresh.current_teacher_temp() == pytest.approx(0.03)
    fresh.load_state_dict(model.state_dict())
    assert fresh.progress == 0.25 and fresh.current_teacher_temp() == pytest.approx(0.05)
    model.set_progress(0.9)
    assert model.current_teacher_temp() == pytest.approx(0.07)


@pytest.mark.parametrize("build", [_byol, _dino], ids=["byol", "dino"])
def test_a_step_reads_nothing_back_to_the_host(no_host_reads, build):
    """As for MoCo: a host read in the forward pass, DINO's center update or the teacher's scheduled update would
    be a GPU sync every step."""
    model = build()
    model.set_progress(0.3)
    x0, x1 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    with no_host_reads():
        out = model(x0, x1)
        out.training_loss().backward()
        model.on_step_end()
    assert out.loss.shape == (8,)


@pytest.mark.parametrize("memory", list(MEMORY_FORMS))
def test_every_emp_memory_form_it_can_read_scores_byol_and_dino_outputs(memory):
    """The EMP forms read the loss, the embedding and the agreement; DINO also gives the softmax entropy.
    Neither method has a positive (no negatives), so the ``forgetting`` form says what is missing."""
    for model in (_byol(), _dino()):
        indices = torch.arange(4, 12)
        outputs = [model(torch.rand(n, 1, 8, 8), torch.rand(n, 1, 8, 8)) for n in (8, 4, 4)]
        steps = [(indices, outputs[0], 0), (indices[:4], outputs[1], 1), (indices[4:], outputs[2], 3)]
        pruner = Pruner(20, 4, scorer="emp", memory=memory, selector="eps_greedy", rate=0.3, beta=1.0)
        if memory == "forgetting" or (memory == "entropy" and isinstance(model, BYOL)):
            with pytest.raises(ValueError, match=memory):
                for step_indices, stats, epoch in steps:
                    pruner.observe(step_indices, stats, epoch=epoch)
                pruner.scorer.selection_scores(pruner.table, epoch=4)
            continue
        for step_indices, stats, epoch in steps:
            pruner.observe(step_indices, stats, epoch=epoch)
        memory_term = pruner.scorer.memory_now(pruner.table, epoch=4)[indices]
        assert bool(torch.isfinite(memory_term).all()), (type(model).__name__, memory)


def _cfg(overrides, *extra):
    return load_pretrain_config("configs/default.yaml", [*overrides, *extra])


@pytest.mark.parametrize("method", ["byol", "dino"])
@pytest.mark.parametrize("pruner", ["emp", "random"])
def test_pruning_runs_end_to_end_with_byol_and_dino(tiny_overrides, method, pruner):
    pruning = ["pruning.scorer=emp", "pruning.selector=infobatch"] if pruner == "emp" else ["pruning.selector=random"]
    extra = TINY_DINO if method == "dino" else [f"method.name={method}"]
    result = pretrain(
        _cfg(
            tiny_overrides,
            *extra,
            *pruning,
            "pruning.rate=0.5",
            "pruning.anneal=0",
            "train.epochs=3",
            "monitor.every=0",
        ),
        show_progress=False,
    )
    assert result.achieved_rate == pytest.approx(0.5, abs=0.03)
    assert math.isfinite(result.final_loss) and result.epochs_done == 3
    last = result.history[-1]
    assert sum(last["pruning/visit_histogram"]) == 1347
    assert last["pruning/epoch_kept_fraction"] < 0.6  # the last epoch really was pruned


def test_the_config_builds_each_method_with_its_settings():
    cfg = load_pretrain_config(
        "configs/dino_digits.yaml",
        ["train.epochs=40", "method.teacher_temp_warmup_epochs=10", "method.warmup_teacher_temp=0.02"],
    )
    model = build_method(cfg, in_channels=1)
    assert isinstance(model, DINO) and model.criterion.center.shape == (1, 1, cfg.model.proj_output_dim)
    assert model.teacher_temp_warmup == pytest.approx(0.25)  # epochs, as a fraction of the run
    assert model.current_teacher_temp() == pytest.approx(0.02)
    byol = build_method(load_pretrain_config("configs/byol_digits.yaml", ["method.momentum=0.9"]), in_channels=1)
    assert isinstance(byol, BYOL) and byol.current_momentum() == pytest.approx(0.9)


def test_dino_trains_with_local_crops_through_the_trainer(tiny_overrides, monkeypatch):
    seen = []
    original = DINO.forward

    def recording(self, view0, view1, shard=None, local_views=()):
        seen.append([tuple(v.shape[-2:]) for v in (view0, *local_views)])
        return original(self, view0, view1, shard, local_views)

    monkeypatch.setattr(DINO, "forward", recording)
    result = pretrain(
        _cfg(
            tiny_overrides,
            *TINY_DINO,
            "augment.local_crops=3",
            "augment.local_crop_size=6",
            "train.epochs=1",
            "monitor.every=0",
        ),
        show_progress=False,
    )
    assert math.isfinite(result.final_loss) and len(seen) == result.global_step
    assert all(shapes == [(8, 8)] + [(6, 6)] * 3 for shapes in seen)
    with pytest.raises(ConfigError, match="augment.local_crops .*read only when method.name is dino"):
        _cfg(tiny_overrides, "method.name=byol", "augment.local_crops=2")


def test_dinos_last_layer_stays_frozen_for_its_share_of_the_run_and_only_it():
    model = _dino(freeze_last_layer=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)  # decay, too, must leave it
    last, hidden = model.projection_head.last_layer, model.projection_head.layers
    images = torch.rand(2, 8, 1, 8, 8)

    def step(progress):
        before = [p.detach().clone() for p in (*last.parameters(), *hidden.parameters())]
        model.set_progress(progress)
        optimizer.zero_grad()
        model(*images).loss.mean().backward()
        model.before_optimizer_step()
        optimizer.step()
        return [not torch.equal(b, p) for b, p in zip(before, (*last.parameters(), *hidden.parameters()))]

    moved = step(0.4)
    frozen_count = len(list(last.parameters()))
    assert not any(moved[:frozen_count]) and any(moved[frozen_count:])
    assert any(step(0.5)[:frozen_count])


def test_the_trainer_freezes_dinos_last_layer(tiny_overrides):
    """Frozen for the whole run, the student's last layer stays where it began, and so does the teacher's moving
    average of it, while the layers before it move."""
    from ssl_emp.engine import load_checkpoint

    def weights(freeze):
        """(student, teacher) of each head parameter, by its name inside the head."""
        result = pretrain(
            _cfg(
                tiny_overrides,
                *TINY_DINO,
                "train.epochs=2",
                "monitor.every=0",
                f"method.freeze_last_layer_epochs={freeze}",
                f"run.name=freeze{freeze}",
            ),
            show_progress=False,
        )
        state = load_checkpoint(result.checkpoint)["model"]
        names = [key.removeprefix("projection_head.") for key in state if key.startswith("projection_head.")]
        return {name: (state[f"projection_head.{name}"], state[f"projection_head_momentum.{name}"]) for name in names}

    def student_equals_teacher(pairs, prefix):
        return all(
            torch.allclose(s.float(), t.float(), atol=1e-6) for n, (s, t) in pairs.items() if n.startswith(prefix)
        )

    frozen, free = weights(2), weights(0)
    assert student_equals_teacher(frozen, "last_layer") and not student_equals_teacher(frozen, "layers")
    assert not student_equals_teacher(free, "last_layer")
