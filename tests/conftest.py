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
