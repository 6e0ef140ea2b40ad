import pytest
import torch

from ssl_emp.data.augment import Normalize, TwoViews


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32), (3, 64)])
def test_two_views_shapes_and_range(channels, size):
    torch.manual_seed(0)
    images = torch.rand(16, channels, size, size)
    # mean 0 / std 1 leaves the pixel values visible: every transform must keep them in [0, 1].
    views = TwoViews(size, channels, [0.0] * channels, [1.0] * channels)
    v0, v1 = views(images)
    for view in (v0, v1):
        assert view.shape == images.shape and view.dtype == torch.float32
        assert view.min() >= -1e-5 and view.max() <= 1 + 1e-5
    assert not torch.allclose(v0, v1)


def test_views_are_random_per_sample():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    batch = image.expand(8, -1, -1, -1).contiguous()  # eight copies of one image
    view, _ = TwoViews(32, 3, [0.0] * 3, [1.0] * 3)(batch)
    distinct = {tuple(v.flatten()[:64].tolist()) for v in view}
    assert len(distinct) == 8


def test_normalisation_uses_the_given_statistics():
    torch.manual_seed(0)
    images = torch.rand(256, 1, 8, 8) * 0.5 + 0.25
    only_crop = dict(crop_scale_min=1.0, hflip_p=0, jitter_p=0)  # only the (full) crop and normalisation
    v0, _ = TwoViews(8, 1, [images.mean().item()], [images.std().item()], **only_crop)(images)
    assert abs(v0.mean().item()) < 0.05 and abs(v0.std().item() - 1) < 0.1
    eval_view = Normalize([0.5], [0.25])(images)
    assert torch.allclose(eval_view, (images - 0.5) / 0.25)


def test_views_are_drawn_per_sample_and_per_view():
    """One call augments a batch as a DataLoader would, image by image: identical images get different views,
    and the two views of one image differ."""
    torch.manual_seed(0)
    images = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    v0, v1 = TwoViews(16, 3, [0.5] * 3, [0.2] * 3)(images)
    assert v0.shape == v1.shape == images.shape
    assert not torch.allclose(v0[0], v0[1]) and not torch.allclose(v0[0], v1[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: views are made on the training device")
def test_views_are_made_on_the_gpu_without_leaving_it():
    images = torch.rand(4, 3, 16, 16, device="cuda")
    views = TwoViews(16, 3, [0.5] * 3, [0.2] * 3).to("cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        v0, v1 = views(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert v0.device.type == v1.device.type == "cuda"
