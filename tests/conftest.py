import os

import pytest

# Tests never talk to W&B unless they ask for it explicitly.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_overrides(tmp_path):
    """A seconds-long digits run: a narrow CNN, few epochs, W&B off."""
    return ["model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "train.batch_size=128",
            "train.epochs=2", "train.checkpoint_every=1", "train.log_every=2", "tracking.wandb=disabled",
            f"run.out_dir={tmp_path / 'runs'}", "run.name=tiny"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished two-epoch digits run, shared by the evaluation and export tests (read-only)."""
    from ssl_emp.config import load_pretrain_config
    from ssl_emp.build import pretrain

    out = tmp_path_factory.mktemp("shared-runs")
    cfg = load_pretrain_config("configs/default.yaml", [
        "model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "train.batch_size=128",
        "train.epochs=2", "tracking.wandb=disabled", "monitor.every=0", f"run.out_dir={out}", "run.name=tiny"])
    return pretrain(cfg, show_progress=False).run_dir
