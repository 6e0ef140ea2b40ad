import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ssl_emp.methods.losses import per_sample_ntxent, view_agreement
from ssl_emp.pruning import SampleStats

pytestmark = pytest.mark.kernels("our per-sample losses against lightly's, within float tolerance")


@pytest.mark.parametrize("batch,dim,temperature", [(2, 4, 0.5), (16, 32, 0.1), (64, 128, 0.2)])
def test_per_sample_ntxent_mean_matches_lightly(batch, dim, temperature):
    torch.manual_seed(batch)
    z0, z1 = torch.randn(batch, dim), torch.randn(batch, dim)
    per_sample = per_sample_ntxent(z0, z1, temperature)
    assert per_sample.shape == (batch,)
    expected = NTXentLoss(temperature=temperature)(z0, z1)
    assert torch.allclose(per_sample.mean(), expected, atol=1e-5, rtol=0)


def test_per_sample_ntxent_gradient_matches_lightly():
    torch.manual_seed(0)
    z0, z1 = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    ours = torch.autograd.grad(per_sample_ntxent(z0, z1, 0.3).mean(), (z0, z1))
    theirs = torch.autograd.grad(NTXentLoss(temperature=0.3)(z0, z1), (z0, z1))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6)


def test_per_sample_ntxent_follows_the_sample_when_the_batch_is_permuted():
    torch.manual_seed(1)
    z0, z1 = torch.randn(12, 8), torch.randn(12, 8)
    perm = torch.randperm(12)
    assert torch.allclose(per_sample_ntxent(z0, z1, 0.5)[perm], per_sample_ntxent(z0[perm], z1[perm], 0.5), atol=1e-6)


def test_a_matched_pair_has_lower_loss_than_a_mismatched_one():
    torch.manual_seed(2)
    z0 = torch.randn(6, 8)
    z1 = z0.clone()
    z1[0] = torch.randn(8)  # sample 0's views disagree
    loss = per_sample_ntxent(z0, z1, 0.2)
    assert loss[0] > loss[1:].max()


def test_view_agreement_is_detached_cosine():
    z0, z1 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    agreement = view_agreement(z0, z1)
    assert not agreement.requires_grad
    assert torch.allclose(agreement, F.cosine_similarity(z0, z1, dim=1).detach())


def test_training_loss_applies_per_sample_weights():
    out = SampleStats(torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    assert out.training_loss().item() == pytest.approx(2.0)
    assert out.training_loss(torch.tensor([0.0, 1.0, 2.0])).item() == pytest.approx((0 + 2 + 6) / 3)


def test_losses_are_float32_under_bf16_autocast():
    """The backbone may run in bf16; similarities, logits and per-sample losses must not (at tau = 0.2 a bf16
    logit resolves about 0.04, the size of the differences pruning ranks by)."""
    from ssl_emp.methods.losses import (
        per_sample_dino_with_entropy,
        per_sample_infonce_with_stats,
        per_sample_negative_cosine,
        per_sample_ntxent_with_stats,
    )

    torch.manual_seed(0)
    z0, z1, k0, k1 = (torch.randn(64, 128) for _ in range(4))
    queue = torch.randn(512, 128)
    center = torch.randn(1, 1, 128)
    losses = {
        "simclr": lambda: per_sample_ntxent_with_stats(z0, z1, 0.2)[0],
        "moco": lambda: per_sample_infonce_with_stats(z0, z1, k0, k1, queue, 0.2)[0],
        "byol": lambda: per_sample_negative_cosine(z0, z1, k0, k1),
        "dino": lambda: per_sample_dino_with_entropy([k0, k1], [z0, z1], center, 0.04, 0.1)[0],
    }
    exact = {name: loss() for name, loss in losses.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = {name: loss() for name, loss in losses.items()}
    for name, loss in under_bf16.items():
        assert loss.dtype == torch.float32 and (loss - exact[name]).abs().max() < 1e-3, name
