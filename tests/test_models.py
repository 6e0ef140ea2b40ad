import pytest
import torch
import torchvision

from ssl_emp.methods import SimCLR
from ssl_emp.models import build_backbone


@pytest.mark.parametrize("name,dim", [("small_cnn", 32), ("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_backbone_feature_dims(name, dim):
    net, feature_dim = build_backbone(name, in_channels=3, cifar_stem=True, width=16)
    assert feature_dim == dim
    assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, dim)


def _feature_map_sizes(net, images):
    """Spatial size of the first residual stage's output and of the map global pooling reduces."""
    seen = {}

    def after_stage1(module, inputs, output):
        seen["stage1"] = tuple(output.shape[-2:])

    def before_pooling(module, inputs):
        seen["pooled"] = tuple(inputs[0].shape[-2:])

    hooks = [net.layer1.register_forward_hook(after_stage1), net.avgpool.register_forward_pre_hook(before_pooling)]
    try:
        with torch.no_grad():
            net.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen["stage1"], seen["pooled"]


@pytest.mark.parametrize(
    "name, in_channels, size, cifar_maps, imagenet_maps",
    [
        ("resnet18", 3, 32, ((32, 32), (4, 4)), ((8, 8), (1, 1))),
        ("resnet18", 1, 32, ((32, 32), (4, 4)), ((8, 8), (1, 1))),
        ("resnet18", 1, 8, ((8, 8), (1, 1)), ((2, 2), (1, 1))),
        ("resnet50", 3, 32, ((32, 32), (4, 4)), ((8, 8), (1, 1))),
    ],
    ids=["resnet18-rgb-32px", "resnet18-grey-32px", "resnet18-grey-8px", "resnet50-rgb-32px"],
)
def test_cifar_stem_keeps_resolution_where_the_imagenet_stem_divides_it_by_four(
    name, in_channels, size, cifar_maps, imagenet_maps
):
    """The CIFAR stem hands the first stage maps of the input's size (only the three strided stages downsample,
    32x32 -> 4x4 before pooling); the ImageNet stem's stride-2 conv and max-pool divide them by four first."""
    images = torch.rand(2, in_channels, size, size)
    cifar, feature_dim = build_backbone(name, in_channels, cifar_stem=True)
    imagenet, _ = build_backbone(name, in_channels, cifar_stem=False)
    assert _feature_map_sizes(cifar, images) == cifar_maps
    assert _feature_map_sizes(imagenet, images) == imagenet_maps
    with torch.no_grad():
        assert cifar(images).shape == (2, feature_dim)


def test_resnet_weights_load_into_plain_torchvision():
    net, _ = build_backbone("resnet18", 3, cifar_stem=False)
    plain = torchvision.models.resnet18()
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []


@pytest.mark.parametrize("name,cifar_stem", [("small_cnn", False), ("resnet18", False), ("resnet18", True)])
def test_a_one_channel_backbone_takes_grey_images_and_refuses_rgb(name, cifar_stem):
    net, feature_dim = build_backbone(name, 1, cifar_stem=cifar_stem, width=8)
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(3, 1, 32, 32)).shape == (3, feature_dim)
        with pytest.raises(RuntimeError):
            net(torch.rand(3, 3, 32, 32))


def test_unknown_backbone_lists_known():
    with pytest.raises(ValueError, match="small_cnn"):
        build_backbone("vit", 3)


def test_simclr_outputs_per_sample_loss_and_agreement_from_one_forward():
    torch.manual_seed(0)
    backbone, feature_dim = build_backbone("small_cnn", 1, width=8)
    model = SimCLR(backbone, feature_dim, proj_hidden_dim=32, proj_dim=16)
    out = model(torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8))
    assert out.loss.shape == (6,) and out.agreement.shape == (6,)
    assert out.loss.requires_grad and not out.agreement.requires_grad
    assert (out.agreement.abs() <= 1 + 1e-5).all()
    out.training_loss().backward()
    assert model.backbone[0].weight.grad is not None
