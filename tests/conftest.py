import contextlib
import os

import pytest

# Tests never talk to W&B unless they ask for it explicitly.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_overrides(tmp_path):
    """A seconds-long digits run: a narrow CNN, few epochs, W&B off."""
    return [
        "model.width=8",
        "model.proj_hidden_dim=32",
        "model.proj_output_dim=16",
        "train.batch_size=128",
        "train.epochs=2",
        "train.checkpoint_every=1",
        "train.log_every=2",
        "tracking.wandb=disabled",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=tiny",
    ]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished two-epoch digits run, shared by the evaluation and export tests (read-only)."""
    from ssl_emp.build import pretrain
    from ssl_emp.config import load_pretrain_config

    out = tmp_path_factory.mktemp("shared-runs")
    cfg = load_pretrain_config(
        "configs/default.yaml",
        [
            "model.width=8",
            "model.proj_hidden_dim=32",
            "model.proj_output_dim=16",
            "train.batch_size=128",
            "train.epochs=2",
            "tracking.wandb=disabled",
            "monitor.every=0",
            f"run.out_dir={out}",
            "run.name=tiny",
        ],
    )
    return pretrain(cfg, show_progress=False).run_dir


@pytest.fixture
def no_host_reads(monkeypatch):
    """A context in which reading a tensor's value back to the host (.item(), int(), bool(), ...) raises: on a GPU
    each such read in a training step would be a sync every step."""
    import torch

    @contextlib.contextmanager
    def forbidden():
        def host_read(*args, **kwargs):
            raise AssertionError("host read during a training step")

        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
            monkeypatch.setattr(torch.Tensor, name, host_read)
        try:
            yield
        finally:
            monkeypatch.undo()

    return forbidden


@pytest.fixture
def assert_ema_step():
    """``check(model, momentum)``: after the online backbone moves, ``model.on_step_end()`` moves its momentum copy
    (``backbone_momentum``) to ``momentum * old + (1 - momentum) * online``."""
    import torch

    def check(model, momentum: float) -> None:
        with torch.no_grad():
            for p in model.backbone.parameters():
                p.add_(1.0)
        before = [p.clone() for p in model.backbone_momentum.parameters()]
        model.on_step_end()
        for old, new, online in zip(before, model.backbone_momentum.parameters(), model.backbone.parameters()):
            assert torch.allclose(new, momentum * old + (1 - momentum) * online)

    return check
