"""The label-free audit's figures on pools whose contents are planted: each recovers what was planted within a
stated tolerance, means the same however the embedding is scaled, rotated or widened, and the curation weights
count a group of copies as one image."""

import pytest
import torch

from ssl_emp.curation import audit, curation_weights, exact_copy_groups, recommend


def _modes(sizes, dim=32, spread=0.6, seed=0):
    """Unit vectors around one random direction per mode, ``sizes[k]`` of them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(len(sizes), dim, generator=g), dim=1)
    rows = [c + spread * torch.randn(n, dim, generator=g) / dim**0.5 for c, n in zip(centres, sizes)]
    return torch.cat(rows)


def _with_near_copies(x, copies, seed=1):
    """``x`` and ``copies`` more rows, each a near-copy (a tiny perturbation) of one of x's first rows."""
    g = torch.Generator().manual_seed(seed)
    bases = torch.randint(len(x), (copies,), generator=g)
    return torch.cat([x, x[bases] + 1e-3 * torch.randn(copies, x.shape[1], generator=g)])


def test_exact_copies_are_found_by_their_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (70, 1, 8, 8), dtype=torch.uint8, generator=g)
    pool = torch.cat([images, images[:30]])  # 30 of 100 repeat an earlier image, pixel for pixel
    groups = exact_copy_groups(pool)
    assert int((groups != torch.arange(100)).sum()) == 30 and torch.equal(groups[70:], torch.arange(30))


def test_near_copies_are_found_by_the_embedding_and_clean_data_has_none():
    clean = _modes([40] * 10)
    found, _ = audit(clean)
    assert found.near_copy_share < 0.03  # a few chance pairs among 400 random points
    copied, parts = audit(_with_near_copies(clean, 100))  # 100 of 500: 20% near-copies
    assert copied.near_copy_share == pytest.approx(0.2, abs=0.02)
    assert copied.effective_size == pytest.approx(400, abs=5) and copied.recommendation == "deduplicate"


def test_well_separated_modes_in_a_long_tail_make_the_coarse_clusters_uneven():
    """On separated modes the figure reads the tail; on real embeddings it did not (docs/auditing.md), so the
    recommendation does not act on it."""
    balanced, _ = audit(_modes([100] * 10))
    tail = [round(400 * 20 ** (-k / 9)) for k in range(10)]  # imbalance 20: 400 ... 20
    uneven, _ = audit(_modes(tail))
    assert balanced.top_cluster_share < 0.15 < 0.3 < uneven.top_cluster_share
    assert uneven.effective_clusters < balanced.effective_clusters


def test_isolated_junk_is_counted_as_outliers():
    g = torch.Generator().manual_seed(3)
    modes = _modes([60] * 10)
    junk = torch.randn(60, 32, generator=g)  # 60 unrelated points: 9% of the pool
    found, parts = audit(torch.cat([modes, junk]))
    assert found.outlier_share == pytest.approx(60 / 660, abs=0.03)
    assert parts.outlier[600:].double().mean() > 0.6 and parts.outlier[:600].double().mean() < 0.05


def test_the_figures_mean_the_same_however_the_embedding_is_scaled_rotated_or_widened():
    x = _with_near_copies(_modes([120, 60, 30, 15, 8]), 40)
    rotation = torch.linalg.qr(torch.randn(512, 512, generator=torch.Generator().manual_seed(5)))[0]
    widened = torch.cat([x, torch.zeros(len(x), 512 - 32)], dim=1) @ rotation
    reference = audit(x)[0].as_dict()
    for variant in (7.5 * x, widened):
        other = audit(variant)[0].as_dict()
        for key in ("near_copy_share", "copy_groups", "top_cluster_share", "outlier_share", "recommendation"):
            assert (
                other[key] == pytest.approx(reference[key], abs=0.02)
                if isinstance(other[key], float)
                else (other[key] == reference[key])
            ), key


def test_curation_weights_count_a_group_of_copies_as_one_image(tmp_path):
    from ssl_emp.pruning.selectors.prior import read_prior

    x = _modes([100] * 4)
    pool = torch.cat([x, x[:1].repeat(24, 1)])  # sample 0 and its 24 copies
    _, parts = audit(pool)
    weights = curation_weights(parts, balance=1.0)
    group = parts.copy_group == parts.copy_group[0]
    assert int(group.sum()) == 25
    typical = weights[~group & (parts.assignment == parts.assignment[0])].mean()
    assert float(weights[group].sum()) == pytest.approx(float(typical), rel=0.05)
    assert float(weights.mean()) == pytest.approx(1.0) and bool((weights > 0).all())
    file = tmp_path / "weights.txt"
    file.write_text("\n".join(f"{w:.6g}" for w in weights.tolist()) + "\n")
    assert torch.allclose(read_prior(str(file), len(pool)), weights.double(), rtol=1e-5)


def test_the_recommendation_names_its_rule():
    assert recommend(0.3)[0] == "deduplicate" and "de-duplicate" in recommend(0.3)[1]
    assert recommend(0.05)[0] == "random" and "under 10%" in recommend(0.05)[1]
