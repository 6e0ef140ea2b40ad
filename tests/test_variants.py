"""The uncurated training sets the benchmark builds: their shape is what the docs say, from the seed alone."""

import pytest
import torch

from ssl_emp.data import ImageBank
from ssl_emp.data.variants import long_tailed, with_junk, with_near_duplicates


def _bank(per_class=60, classes=10, side=8):
    # Smooth images (4x4 noise, upsampled), as photographs are: a shift of a pixel or two changes them little.
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((per_class * classes, 1, 4, 4), generator=generator) * 255
    images = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear").to(torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageBank(images, labels, classes, "toy")


def test_long_tailed_sizes_fall_exponentially_to_the_imbalance_ratio():
    made = long_tailed(_bank(), imbalance=20, seed=3)
    sizes = sorted(made.class_sizes, reverse=True)
    assert sizes[0] == 60 and sizes[-1] == 3  # 60 / 20
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert torch.bincount(made.bank.labels, minlength=10).tolist() == made.class_sizes
    assert [made.class_sizes[c] for c in made.rarest] == sorted(made.class_sizes)
    again = long_tailed(_bank(), imbalance=20, seed=3)
    assert torch.equal(again.bank.images, made.bank.images)
    assert long_tailed(_bank(), imbalance=20, seed=4).rarest != made.rarest  # the seed picks the rare classes


def test_near_duplicates_are_shifted_noisy_copies_of_their_base():
    bank = _bank(side=16)
    made = with_near_duplicates(bank, unique=100, bases=5, copies=9, max_shift=2, noise=4.0, seed=1)
    assert len(made.bank) == 100 + 5 * 10 and int(made.is_copy.sum()) == 45
    copies = made.is_copy.nonzero().squeeze(1)
    bases = made.base_of[copies]
    assert not bool(made.is_copy[bases].any()) and len(set(bases.tolist())) == 5
    assert torch.equal(made.bank.labels[copies], made.bank.labels[bases])
    # A copy is close to its base (inside the shift margin, up to the noise), far from other images.
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    copy_err = (made.bank.images[copies].float() - made.bank.images[bases].float()).abs()[inner].mean()
    others = (made.bank.images[copies].float() - made.bank.images[~made.is_copy][:45].float()).abs()[inner].mean()
    assert copy_err < 0.5 * others
    originals = (~made.is_copy).nonzero().squeeze(1)
    assert torch.equal(made.base_of[originals], originals)  # an original is its own base


def test_junk_sits_beside_real_images_unlabelled_in_a_seeded_order():
    bank = _bank(side=16)
    for kind in ("flat", "noise", "blur", "other"):
        made = with_junk(bank, real=100, junk=150, kind=kind, seed=2, other=_bank(side=8) if kind == "other" else None)
        assert len(made.bank) == 250 and int(made.is_junk.sum()) == 150
        assert bool((made.bank.labels[made.is_junk] == -1).all()) and bool((made.bank.labels[~made.is_junk] >= 0).all())
        assert made.bank.images.shape[1:] == bank.images.shape[1:]
        again = with_junk(bank, real=100, junk=150, kind=kind, seed=2, other=_bank(side=8) if kind == "other" else None)
        assert torch.equal(again.bank.images, made.bank.images)
    flat = with_junk(bank, real=10, junk=50, kind="flat").bank
    junk = flat.images[flat.labels < 0].float()
    assert float(junk.flatten(1).std(dim=1).mean()) < 6  # near-uniform: one grey level and a little noise
    with pytest.raises(ValueError, match="unknown junk kind"):
        with_junk(bank, real=10, junk=5, kind="static")


def test_with_junk_says_where_each_real_sample_came_from():
    """The source index lets a variant be built on another (a long tail, then copies, then junk) and keep
    the earlier flags: each real image is the input bank's image at its source, junk has source -1."""
    bank = _bank()
    made = with_junk(bank, real=len(bank), junk=30, kind="noise", seed=1)
    real = made.source >= 0
    assert (made.source[made.is_junk] == -1).all() and int(real.sum()) == len(bank)
    assert torch.equal(made.bank.images[real], bank.images[made.source[real]])
    assert made.source[real].sort().values.tolist() == list(range(len(bank)))
