import pytest
import torch
import torchvision

from ssl_emp.config import MethodConfig, ModelConfig
from ssl_emp.methods import build_method
from ssl_emp.models import build_backbone


@pytest.mark.parametrize("name,dim", [("small_cnn", 32), ("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_backbone_feature_dims(name, dim):
    net, feature_dim = build_backbone(name, in_channels=3, cifar_stem=True, width=16)
    assert feature_dim == dim
    assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    net, _ = build_backbone("resnet18", 3, cifar_stem=True)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_resnet_weights_load_into_plain_torchvision():
    net, _ = build_backbone("resnet18", 3, cifar_stem=False)
    plain = torchvision.models.resnet18()
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []


def test_one_channel_input():
    net, _ = build_backbone("resnet18", 1, cifar_stem=False)
    assert net.conv1.in_channels == 1
    assert net.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def test_unknown_backbone_lists_known():
    with pytest.raises(ValueError, match="small_cnn"):
        build_backbone("vit", 3)


def test_simclr_outputs_per_sample_loss_and_agreement_from_one_forward():
    torch.manual_seed(0)
    model = build_method(MethodConfig(), ModelConfig(width=8, proj_hidden_dim=32, proj_output_dim=16), in_channels=1)
    out = model(torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8))
    assert out.per_sample_loss.shape == (6,) and out.agreement.shape == (6,)
    assert out.per_sample_loss.requires_grad and not out.agreement.requires_grad
    assert (out.agreement.abs() <= 1 + 1e-5).all()
    out.training_loss().backward()
    assert model.backbone[0].weight.grad is not None
