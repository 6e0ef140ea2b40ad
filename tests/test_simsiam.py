"""SimSiam: its per-sample loss against lightly's, and a pruned run. Resuming exactly, the budget and the host
reads are checked for it as for every method in METHODS (tests/test_contracts.py, tests/test_engine.py)."""

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.methods import SimSiam
from ssl_emp.models import build_backbone


def test_the_per_sample_loss_has_lightlys_symmetrised_negative_cosine_as_its_mean():
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn", 1, width=8)
    model = SimSiam(backbone, dim, proj_hidden_dim=32, proj_dim=16)
    x0, x1 = torch.rand(12, 1, 8, 8), torch.rand(12, 1, 8, 8)
    out = model(x0, x1)
    z0, z1 = model.projection_head(model.backbone(torch.cat([x0, x1]))).chunk(2)
    p0, p1 = model.prediction_head(torch.cat([z0, z1])).chunk(2)
    criterion = NegativeCosineSimilarity()
    expected = 0.5 * (criterion(p0, z1.detach()) + criterion(p1, z0.detach()))
    assert out.loss.shape == (12,)
    assert out.loss.mean().item() == pytest.approx(expected.item(), abs=1e-5)
    # The stop-gradient: the projection head's gradient is that of the loss with the targets detached, not that
    # of the same cosine with gradient through both sides.
    out.loss.mean().backward()
    stopped = [p.grad.clone() for p in model.projection_head.parameters()]
    model.zero_grad()
    through = -0.5 * (
        torch.nn.functional.cosine_similarity(p0, z1, dim=1) + torch.nn.functional.cosine_similarity(p1, z0, dim=1)
    )
    through.mean().backward(retain_graph=True)
    assert not all(torch.allclose(a, p.grad) for a, p in zip(stopped, model.projection_head.parameters()))
    model.zero_grad()
    expected.backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(stopped, model.projection_head.parameters()))


@pytest.mark.slow
def test_a_pruned_simsiam_run_keeps_its_rate_and_learns(tiny_overrides):
    cfg = load_pretrain_config(
        None,
        [
            *tiny_overrides,
            "method.name=simsiam",
            "train.epochs=4",
            "pruning.rate=0.5",
            "pruning.selector=random",
            "pruning.anneal=0",
        ],
    )
    result = pretrain(cfg, show_progress=False)
    assert result.achieved_rate == pytest.approx(0.5, abs=0.01)
    assert torch.isfinite(torch.tensor(result.final_loss)) and result.final_loss < 0  # a cosine: -1 best, 0 chance
