"""Contracts every registered part keeps, checked over the registries themselves (as timm's tests run over
``list_models()``): a new selector, scorer or method is covered by adding it to ``SELECTORS``, ``SCORERS`` or
``METHODS``. What a part needs to run at all (a selector's file of weights, a method's small queue) is the only
per-entry knowledge here, and an entry that needs none needs no line."""

import dataclasses
import io

import pytest
import torch

from ssl_emp.build import build_method
from ssl_emp.config import load_pretrain_config
from ssl_emp.methods import METHODS
from ssl_emp.pruning import MEMORY_FORMS, SCORERS, SELECTORS, Pruner, SampleStats

pytestmark = pytest.mark.kernels("a resumed or repeated selector must retrace the same float sums")

N, EPOCHS, DIM = 300, 12, 16


def _selector_settings(name, tmp_path) -> dict:
    settings = {"selector": name, "rate": 0.0 if name == "full" else 0.7, "anneal": 0.0}
    if name == "prior":  # follows given weights: a file of them
        path = tmp_path / "weights.pt"
        torch.save(torch.rand(N, generator=torch.Generator().manual_seed(0)) + 0.1, path)
        settings["prior_file"] = str(path)
    return settings


def _points():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(6, DIM, generator=generator)
    return centres[torch.randint(6, (N,), generator=generator)] + 0.3 * torch.randn(N, DIM, generator=generator)


def _drive(pruner, epochs, start=0):
    """Plan every epoch from ``start``, observing seeded losses for the planned samples; returns the plans."""
    points, plans = _points(), []
    for epoch in range(start, epochs):
        if pruner.needs_embeddings(epoch):
            pruner.set_embeddings(torch.arange(N), points, epoch)
        plan = pruner.plan(epoch)
        losses = torch.rand(len(plan.indices), generator=torch.Generator().manual_seed(epoch)) + plan.indices / N
        pruner.observe(plan.indices, SampleStats(losses, embedding=points[plan.indices]), epoch)
        plans.append(plan.indices.clone())
    return plans


@pytest.mark.parametrize("name", list(SELECTORS))
def test_every_selector_meets_its_budget_exactly(name, tmp_path):
    pruner = Pruner(N, EPOCHS, seed=3, **_selector_settings(name, tmp_path))
    for epoch, plan in enumerate(_drive(pruner, EPOCHS)):
        assert plan.numel() == pruner.planned_size(epoch), f"epoch {epoch}"
        assert plan.unique().numel() == plan.numel() and 0 <= int(plan.min()) and int(plan.max()) < N
    expected = 0.0 if name == "full" else 0.7
    assert pruner.achieved_rate() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("name", list(SELECTORS))
def test_every_selector_is_deterministic_given_its_seed(name, tmp_path):
    first = _drive(Pruner(N, EPOCHS, seed=5, **_selector_settings(name, tmp_path)), EPOCHS)
    again = _drive(Pruner(N, EPOCHS, seed=5, **_selector_settings(name, tmp_path)), EPOCHS)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("name", list(SELECTORS))
def test_every_selector_round_trips_its_state_and_plans_on_as_if_never_stopped(name, tmp_path):
    straight = _drive(Pruner(N, EPOCHS, seed=7, **_selector_settings(name, tmp_path)), EPOCHS)
    first = Pruner(N, EPOCHS, seed=7, **_selector_settings(name, tmp_path))
    before = _drive(first, EPOCHS // 2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # through bytes, as a checkpoint is
    buffer.seek(0)
    resumed = Pruner(N, EPOCHS, seed=7, **_selector_settings(name, tmp_path))
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    after = _drive(resumed, EPOCHS, start=EPOCHS // 2)
    assert all(torch.equal(a, b) for a, b in zip(before + after, straight, strict=True))


_SCORER_CASES = [("emp", form) for form in MEMORY_FORMS] + [(name, None) for name in SCORERS if name != "emp"]


@pytest.mark.parametrize("scorer, memory", _SCORER_CASES, ids=[f"{s}-{m}" if m else s for s, m in _SCORER_CASES])
def test_every_scorer_steps_without_reading_back_to_the_host(scorer, memory, no_host_reads):
    """A host read (.item(), bool(), .cpu(), ...) while recording a step would be a GPU sync every step."""
    settings = {"memory": memory} if memory else {}
    pruner = Pruner(64, 6, rate=0.5, scorer=scorer, selector="eps_greedy", anneal=0.0, **settings)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(3):
        plan = pruner.plan(epoch)
        for batch in plan.indices.split(16):
            stats = SampleStats(
                torch.rand(len(batch), generator=generator, requires_grad=True),
                agreement=torch.rand(len(batch), generator=generator),
                entropy=torch.rand(len(batch), generator=generator),
                positive_prob=torch.rand(len(batch), generator=generator),
                embedding=torch.randn(len(batch), 8, generator=generator),
            )
            with no_host_reads():
                loss = pruner.step(batch, stats)
                loss.backward()
        pruner.epoch_metrics(plan, epoch + 1, pruner.sample_forwards)


# What a method needs to run on 16 tiny images at all; a method not named needs nothing.
_TINY_METHOD_VALUES = {"moco": {"queue_size": 32}, "dino": {"bottleneck_dim": 16}}
_TINY_METHOD = {name: [f"method.{k}={v}" for k, v in values.items()] for name, values in _TINY_METHOD_VALUES.items()}


def _method(name, *overrides):
    cfg = load_pretrain_config(
        None,
        [
            f"method.name={name}",
            "model.width=8",
            "model.proj_hidden_dim=32",
            "model.proj_output_dim=16",
            *_TINY_METHOD.get(name, []),
            *overrides,
        ],
    )
    torch.manual_seed(0)
    return build_method(cfg, in_channels=1, image_size=8)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_gives_one_loss_per_sample_whose_mean_is_the_loss_it_trains_on(name, no_host_reads):
    model = _method(name)
    views = (
        torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
        torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2)),
    )
    reference = _method(name)  # the same seed: the same weights, queue and center (weight_norm cannot deepcopy)
    with no_host_reads():
        stats = model(*views)
        trained = stats.training_loss(torch.ones(16))
    assert stats.loss.shape == (16,) and stats.loss.requires_grad and torch.isfinite(stats.loss).all()
    assert torch.allclose(trained, stats.loss.mean(), atol=1e-6)
    # The per-sample losses follow their samples: a permuted batch gives the same losses, permuted (from the
    # same state: a queue or a center moves on every forward).
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    permuted = reference(views[0][order], views[1][order])
    assert torch.allclose(permuted.loss, stats.loss.detach()[order], atol=1e-5)


def _changed(value):
    """Another value of a setting, of its type (floats never set a shape)."""
    return (not value) if isinstance(value, bool) else (value * 2 if value else 8) if isinstance(value, int) else None


def _shapes(model) -> dict:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_setting_that_shapes_saved_state_is_declared_so_and_fixed_on_resume(name):
    """A setting whose change changes the method's saved shapes is declared ``shape=True``, so a resumed run
    cannot change it (``resume_fixed()`` is derived from the declarations); one that does not, is not."""
    from ssl_emp.engine.run_dir import resume_fixed
    from ssl_emp.methods.settings import METHODS as REGISTRY

    base = _shapes(_method(name))
    for setting in dataclasses.fields(REGISTRY[name].settings):
        current = dict(_TINY_METHOD_VALUES.get(name, {})).get(setting.name, setting.default)
        other = _changed(current)
        if other is None:
            continue
        changed = _shapes(_method(name, f"method.{setting.name}={other}")) != base
        assert setting.metadata["shape"] == changed, f"{name}: method.{setting.name} (shapes change: {changed})"
        assert (f"method.{setting.name}" in resume_fixed()) == changed
