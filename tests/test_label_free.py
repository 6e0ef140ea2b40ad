"""Quality without labels: RankMe, alignment and uniformity read what they should on planted embeddings, an
unlabelled folder's run logs them, and reading them changes nothing in the training."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_emp.evaluation.label_free import alignment, rankme, uniformity


def test_rankme_reads_the_rank_and_falls_when_the_embedding_collapses():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(2000, 16, generator=g)
    assert rankme(spread) > 14.5  # isotropic in 16 dimensions: close to 16
    three = torch.randn(2000, 3, generator=g) @ torch.randn(3, 16, generator=g)
    assert 2.0 < rankme(three) <= 3.01
    assert rankme(torch.ones(100, 16)) == pytest.approx(1.0, abs=1e-3)


def test_alignment_and_uniformity_read_invariance_and_spread():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 32, generator=g)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, z + 0.1 * torch.randn_like(z)) < alignment(z, torch.randn(500, 32, generator=g))
    assert uniformity(torch.ones(50, 32)) == pytest.approx(0.0, abs=1e-5)  # collapsed onto one point
    assert uniformity(z) < uniformity(z[:, :2]) < 0  # spread over 32 dimensions beats over 2


@pytest.mark.slow
def test_an_unlabelled_folder_run_logs_the_label_free_signals_and_trains_as_without(tmp_path):
    import ssl_emp

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(96):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    common = dict(data=folder, epochs=2, overrides=["model.width=8", "train.batch_size=32"])
    with_signals = ssl_emp.train(out=tmp_path / "runs" / "a", **common)
    without = ssl_emp.train(out=tmp_path / "runs" / "b", **common, monitor={"label_free_every": 0})
    last = with_signals.result.history[-1]
    assert {"monitor/rankme", "monitor/alignment", "monitor/uniformity"} <= set(last)
    assert 1.0 <= last["monitor/rankme"] and last["monitor/uniformity"] < 0 and last["monitor/alignment"] >= 0
    assert "monitor/rankme" not in without.result.history[-1]
    losses = [h["train/epoch_loss"] for h in with_signals.result.history]
    assert losses == [h["train/epoch_loss"] for h in without.result.history]  # reading them trained nothing
