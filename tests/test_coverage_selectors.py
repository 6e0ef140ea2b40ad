"""The selectors that read where samples sit (coverage, central), the score-strata one (stratified), the one that
follows given weights (prior), and what they share: target rates drawn by credit, k-means, neighbour counts."""

import shutil

import pytest
import torch

from ssl_emp.build import pretrain
from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.config import load_pretrain_config
from ssl_emp.pruning import Pruner, SampleStats
from ssl_emp.pruning.embeddings import EmbeddingMemory, draw_by_credit, target_rates
from ssl_emp.pruning.selectors.base import budget
from ssl_emp.pruning.selectors.stratified import even_shares
from ssl_emp.pruning.selectors.target_rates import concentration


def _points(unique=400, bursts=(), dim=32, seed=0, spread=0.05):
    """``unique`` scattered unit-ish vectors, then for each size m in ``bursts`` m near-copies of one more point.
    Returns (embeddings, burst id per sample: -1 for the unique ones)."""
    generator = torch.Generator().manual_seed(seed)
    parts, owner = [torch.randn(unique, dim, generator=generator)], [torch.full((unique,), -1)]
    for b, size in enumerate(bursts):
        centre = torch.randn(1, dim, generator=generator)
        parts.append(centre + spread * torch.randn(size, dim, generator=generator))
        owner.append(torch.full((size,), b))
    return torch.cat(parts), torch.cat(owner)


# The bare threshold rule at power 1 (no floor, no guard), for the tests of that rule's arithmetic; the defaults are
# v4's tuned setting (power 3, guard, floor 0.25; tests/test_benchmark.py checks that).
BARE = {"coverage_power": 1.0, "coverage_guard": False, "floor": 0.0}


def _drive(pruner, embeddings, epochs, score=None):
    """Plan and observe every epoch (losses from ``score`` or random); returns each epoch's plan."""
    generator = torch.Generator().manual_seed(1)
    plans = []
    for epoch in range(epochs):
        if pruner.needs_embeddings(epoch):
            pruner.set_embeddings(torch.arange(len(embeddings)), embeddings, epoch)
        plan = pruner.plan(epoch)
        loss = score[plan.indices] if score is not None else torch.rand(len(plan), generator=generator)
        pruner.observe(plan.indices, SampleStats(loss), epoch)
        plans.append(plan.indices)
    return plans


def test_target_rates_are_proportional_capped_at_one_and_sum_to_the_budget():
    rates = target_rates(torch.tensor([1.0, 1.0, 2.0, 100.0, 0.0]), 2)
    assert rates.sum().item() == pytest.approx(2.0)
    assert rates[3].item() == 1.0 and rates[4].item() == 0.0  # capped; and zero weight gets nothing
    assert rates[2].item() == pytest.approx(2 * rates[0].item())
    assert target_rates(torch.tensor([1.0, 0.0, 0.0]), 2).tolist() == [1.0, 0.0, 0.0]  # only one can be drawn


def test_credit_draws_follow_the_rates_and_equal_rates_are_rs2():
    generator = torch.Generator().manual_seed(0)
    rates = target_rates(torch.tensor([4.0] * 10 + [1.0] * 30), 8)
    credit, visits = torch.zeros(40, dtype=torch.float64), torch.zeros(40)
    for epoch in range(1, 41):
        chosen = draw_by_credit(rates, credit, 8, generator)
        assert chosen.numel() == 8 and chosen.unique().numel() == 8
        visits[chosen] += 1
        # Within one visit of the target at every epoch, give or take one epoch's rate (the draw is greedy).
        assert ((visits - epoch * rates.float()).abs() <= 1.0 + float(rates.max()) + 1e-6).all()
    equal, credit = target_rates(torch.ones(40), 10), torch.zeros(40, dtype=torch.float64)
    seen = torch.cat([draw_by_credit(equal, credit, 10, generator) for _ in range(4)])
    assert seen.sort().values.tolist() == list(range(40))  # every sample once before any twice


def test_kmeans_separates_clear_clusters_and_counts_near_neighbours_inside_them():
    points, owner = _points(unique=0, bursts=(30, 20, 50), spread=0.01)
    memory = EmbeddingMemory(len(points))
    memory.store(torch.arange(len(points)), points, epoch=1)
    assignment = memory.clusters(3).assignment
    for b in range(3):
        assert assignment[owner == b].unique().numel() == 1  # a burst is never split
    counts = memory.neighbour_counts(0.9, 3)
    assert counts[owner == 0].tolist() == [30] * 30 and counts[owner == 2].tolist() == [50] * 50


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_coverage_keeps_the_budget_and_follows_its_target_rates(rate):
    epochs = 40
    embeddings, _ = _points(unique=300, bursts=(5, 10, 20))
    pruner = Pruner(len(embeddings), epochs, rate=rate, selector="coverage", anneal=0.0, seed=0, **BARE)
    plans = _drive(pruner, embeddings, epochs)
    rates = target_rates(
        pruner.selector.neighbours().double().pow(-1.0), budget(len(embeddings), pruner.skip_fraction(1))
    )
    visits = torch.zeros(len(embeddings))
    for epoch, plan in enumerate(plans[1:], 1):
        assert plan.numel() == pruner.planned_size(epoch)  # the budget, exactly
        visits[plan] += 1
    expected = rates.float() * (epochs - 1)  # every pruned epoch keeps the same number here
    assert ((visits - expected).abs() <= 1.0 + float(rates.max()) + 1e-6).all()  # each within about one visit
    assert pruner.achieved_rate() == pytest.approx(rate, abs=0.005)


def test_coverage_at_power_0_has_random_s_expectation():
    """Power 0 ignores the neighbourhoods: every sample's target is the budget's share, as under ``random``."""
    epochs, rate = 31, 0.7
    embeddings, _ = _points(unique=200, bursts=(40,))
    pruner = Pruner(
        len(embeddings), epochs, rate=rate, selector="coverage", anneal=0.0, **{**BARE, "coverage_power": 0.0}
    )
    visits = torch.zeros(len(embeddings))
    for plan in _drive(pruner, embeddings, epochs)[1:]:
        visits[plan] += 1
    share = budget(len(embeddings), pruner.skip_fraction(1)) / len(embeddings)
    assert ((visits - share * (epochs - 1)).abs() <= 1.0 + share + 1e-6).all()


def test_a_planted_burst_of_near_copies_gets_about_one_sample_s_share():
    epochs = 40
    embeddings, owner = _points(unique=400, bursts=(40,))
    visits = {}
    for selector in ("coverage", "random"):
        pruner = Pruner(len(embeddings), epochs, rate=0.8, selector=selector, anneal=0.0, seed=0, **BARE)
        counts = torch.zeros(len(embeddings))
        for plan in _drive(pruner, embeddings, epochs)[1:]:
            counts[plan] += 1
        visits[selector] = counts
    one_sample = visits["coverage"][owner < 0].mean()
    burst = visits["coverage"][owner == 0].sum()
    assert 0.5 * one_sample <= burst <= 2.0 * one_sample  # the 40 copies together: about one sample's visits
    assert visits["random"][owner == 0].sum() > 20 * visits["random"][owner < 0].mean()  # the control: ~40


def _longest_waits(plans, num_samples, epochs):
    last, longest = torch.full((num_samples,), -1), torch.zeros(num_samples, dtype=torch.long)
    for epoch, plan in enumerate(plans):
        longest[plan] = torch.maximum(longest[plan], epoch - last[plan])
        last[plan] = epoch
    return torch.maximum(longest, epochs - last)  # a wait still open at the end counts too


@pytest.mark.parametrize("rate", [0.5, 0.7, 0.9])
def test_coverage_starves_no_sample(rate):
    """No sample without a near-copy waits more than 3 / (1 - rate) epochs between visits, and one with c near
    neighbours (itself included) no more than c times that: a group of near-copies shares one sample's visits by
    design, and takes turns. The control, ``central``'s static coreset, leaves samples out for good."""
    epochs = 60
    embeddings, _ = _points(unique=300, bursts=(2, 3, 5, 30), dim=16)
    pruner = Pruner(len(embeddings), epochs, rate=rate, selector="coverage", anneal=0.0, seed=0, **BARE)
    waits = _longest_waits(_drive(pruner, embeddings, epochs), len(embeddings), epochs)
    neighbours = pruner.selector.neighbours()
    assert int(waits[neighbours == 1].max()) <= 3 / (1 - rate)
    assert bool((waits <= 3 * neighbours / (1 - rate)).all())
    control = Pruner(len(embeddings), epochs, rate=rate, selector="central", anneal=0.0, seed=0)
    assert int(_longest_waits(_drive(control, embeddings, epochs), len(embeddings), epochs).max()) > 3 / (1 - rate)


def test_a_pruner_asks_for_embeddings_and_will_not_plan_without_them():
    pruner = Pruner(50, 10, rate=0.5, selector="coverage", embed_every=3, anneal=0.0)
    assert not pruner.needs_embeddings(0)  # the warm-up trains on everything: nothing to choose
    assert pruner.needs_embeddings(1)
    pruner.plan(0)
    with pytest.raises(ValueError, match="set_embeddings"):
        pruner.plan(1)
    pruner.set_embeddings(torch.arange(50), torch.randn(50, 4), 1)
    assert not pruner.needs_embeddings(2) and not pruner.needs_embeddings(3) and pruner.needs_embeddings(4)
    assert pruner.embedding_forwards == 50
    assert not Pruner(50, 10, rate=0.5, selector="random").needs_embeddings(1)


def test_coverage_resumes_exactly_from_its_state():
    epochs, embeddings = 12, _points(unique=150, bursts=(20,))[0]
    straight = _drive(
        Pruner(len(embeddings), epochs, rate=0.8, selector="coverage", embed_every=4, anneal=0.0, seed=3),
        embeddings,
        epochs,
    )
    first = Pruner(len(embeddings), epochs, rate=0.8, selector="coverage", embed_every=4, anneal=0.0, seed=3)
    _drive(first, embeddings, 6)
    resumed = Pruner(len(embeddings), epochs, rate=0.8, selector="coverage", embed_every=4, anneal=0.0, seed=3)
    resumed.load_state_dict(first.state_dict())
    later = []  # coverage reads no scores: the losses observed cannot change its plans
    for epoch in range(6, epochs):
        if resumed.needs_embeddings(epoch):
            resumed.set_embeddings(torch.arange(len(embeddings)), embeddings, epoch)
        later.append(resumed.plan(epoch).indices)
        resumed.observe(later[-1], SampleStats(torch.zeros(len(later[-1]))), epoch)
    for a, b in zip(straight[6:], later, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sizes,total", [([5, 50, 50, 50], 60), ([100, 100, 100], 200), ([3, 0, 7, 40], 30)])
def test_even_shares_give_small_groups_all_and_split_the_rest_within_one(sizes, total):
    shares = even_shares(sizes, total)
    assert sum(shares) == min(total, sum(sizes)) and all(0 <= s <= n for s, n in zip(shares, sizes))
    open_groups = [s for s, n in zip(shares, sizes) if s < n]
    assert not open_groups or max(open_groups) - min(open_groups) <= 1


def test_stratified_spreads_its_budget_evenly_over_score_strata():
    """Strata of very different sizes (scores piled up at the low end): every stratum short of its share is taken
    whole and the others get equal shares to within one sample, where ``random`` would follow the pile."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.cat([torch.rand(900, generator=generator) * 0.1, torch.linspace(0.1, 1.0, 100)])
    pruner = Pruner(1000, 10, rate=0.8, scorer="loss", selector="stratified", strata=10, anneal=0.0)
    _drive(pruner, torch.zeros(1000, 2), 1, score=scores)
    plan = pruner.plan(1)
    assert len(plan) == budget(1000, pruner.skip_fraction(1))
    edges = torch.linspace(float(scores.min()), float(scores.max()), 11)
    strata = ((scores - edges[0]) / (edges[1] - edges[0])).floor().long().clamp(0, 9)
    kept = torch.bincount(strata[plan.indices], minlength=10)
    available = torch.bincount(strata, minlength=10)
    short = kept == available
    assert bool(short.any()) and bool((~short).any())
    assert int(kept[~short].max() - kept[~short].min()) <= 1
    assert int(kept[~short].min()) >= int(kept[short].max())  # a stratum taken whole had no more than its share


def test_prior_follows_given_weights_and_refuses_a_bad_file(tmp_path):
    weights = torch.cat([torch.zeros(50), torch.ones(50)])
    torch.save(weights, tmp_path / "w.pt")
    pruner = Pruner(100, 6, rate=0.5, selector="prior", prior_file=str(tmp_path / "w.pt"), anneal=0.0)
    plans = _drive(pruner, torch.zeros(100, 2), 6)
    assert all(bool((p >= 50).all()) for p in plans[1:])  # the budget fits in the weighted half: none of the rest
    (tmp_path / "short.txt").write_text("1 2 3")
    for path, message in (
        (tmp_path / "short.txt", "holds 3 weights; the data has 100"),
        (tmp_path / "none.pt", "no such file"),
    ):
        bad = Pruner(100, 6, rate=0.5, selector="prior", prior_file=str(path), anneal=0.0)
        bad.plan(0)
        with pytest.raises(ValueError, match=message):
            bad.plan(1)


@pytest.mark.slow
@pytest.mark.parametrize("selector", ["coverage", "central"])
def test_a_run_embeds_clean_images_counts_them_and_resumes_exactly(tiny_overrides, tmp_path, selector):
    """End to end: the trainer fills the embedding memory when the pruner asks (after the warm-up and every
    ``embed_every`` epochs), the run reports those forwards, and a run resumed from a mid-run checkpoint ends with
    the same weights, score table and credit as the uninterrupted one."""
    overrides = [
        *tiny_overrides,
        "train.epochs=6",
        "train.checkpoint_every=3",
        "monitor.every=0",
        "pruning.rate=0.6",
        f"pruning.selector={selector}",
        "pruning.embed_every=2",
        "pruning.anneal=0",
    ]
    cfg = load_pretrain_config("configs/default.yaml", overrides)
    full = pretrain(cfg, show_progress=False)
    final = load_checkpoint(full.checkpoint)
    assert full.history[-1]["pruning/embedding_forwards"] == 1347 * 3  # before epochs 1, 3 and 5
    assert full.history[-1]["pruning/embedding_seconds"] > 0
    shutil.copytree(full.run_dir, tmp_path / "runs" / "cut")
    cut = tmp_path / "runs" / "cut" / "checkpoints"
    shutil.copy(cut / "epoch_0003.pt", cut / "last.pt")
    resumed = pretrain(
        load_pretrain_config("configs/default.yaml", [*overrides, "run.name=cut", "run.resume=true"]),
        show_progress=False,
    )
    after = load_checkpoint(resumed.checkpoint)
    assert [h["pruning/epoch_kept"] for h in resumed.history] == [h["pruning/epoch_kept"] for h in full.history[3:]]
    for key, value in final["model"].items():
        assert torch.allclose(after["model"][key].float(), value.float(), atol=1e-5), key
    for key, value in final["pruning"]["table"].items():
        torch.testing.assert_close(after["pruning"]["table"][key], value, equal_nan=True, rtol=1e-5, atol=1e-5)
    kept, expected = after["pruning"]["embeddings"], final["pruning"]["embeddings"]  # what the refresh found
    assert "vectors" not in kept  # the checkpoint holds the statistics, not the [N, d] table
    assert torch.equal(kept["clustering"]["assignment"], expected["clustering"]["assignment"])
    torch.testing.assert_close(
        kept["clustering"]["similarity"], expected["clustering"]["similarity"], rtol=1e-4, atol=1e-4
    )
    assert kept["counts"].keys() == expected["counts"].keys()
    for threshold, counts in expected["counts"].items():
        assert torch.equal(kept["counts"][threshold], counts)


def test_coverage_in_your_own_loop_as_the_docs_show_it():
    """docs/pruning.md's loop: ask ``needs_embeddings`` before each epoch, give the features, iterate the batch
    sampler, step with the per-sample loss."""
    from torch.utils.data import DataLoader, TensorDataset

    from ssl_emp.pruning import WithIndex

    data = torch.randn(120, 6)
    features = torch.nn.Linear(6, 4)
    epochs = 8
    pruner = Pruner(len(data), epochs, rate=0.7, selector="coverage", embed_every=3, anneal=0.0)
    loader = DataLoader(WithIndex(TensorDataset(data)), batch_sampler=pruner.batch_sampler(16))
    kept = []
    for epoch in range(epochs):
        if pruner.needs_embeddings(epoch):
            with torch.no_grad():
                pruner.set_embeddings(torch.arange(len(data)), features(data), epoch)
        loader.batch_sampler.set_epoch(epoch)
        seen = 0
        for indices, (x,) in loader:
            loss = pruner.step(indices, features(x).pow(2).mean(dim=1))
            loss.backward()
            seen += len(indices)
        kept.append(seen)
    assert kept[0] == 120 and max(kept[1:]) < 120
    assert pruner.achieved_rate() == pytest.approx(0.7, abs=0.01)
    assert pruner.embedding_forwards == 120 * 3  # before epochs 1, 4 and 7


# --------------------------------------------------------------------------- v4: scale-free density, floor, guard


def _rates(embeddings, rate=0.8, **settings):
    """The coverage rates of the first pruned epoch, and that epoch's logged info; no floor or guard unless asked."""
    settings = {"coverage_guard": False, "floor": 0.0, **settings}
    pruner = Pruner(
        len(embeddings), 10, rate=rate, selector="coverage", coverage_density="cluster", anneal=0.0, seed=0, **settings
    )
    pruner.set_embeddings(torch.arange(len(embeddings)), embeddings, 1)
    keep = budget(len(embeddings), pruner.skip_fraction(1))
    weights, info = pruner.selector.weights(None)
    rates = pruner.selector.rates(weights, keep, info)
    return rates, keep, {**info, **concentration(rates, keep)}


def _modes(sizes=(200, 100, 50, 25, 12), dim=16, spread=0.02, seed=0):
    """Tight modes of the given sizes around orthogonal centres (no sample near a cluster boundary)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0][: len(sizes)]
    points = torch.cat(
        [centres[m].float() + spread * torch.randn(size, dim, generator=generator) for m, size in enumerate(sizes)]
    )
    return points, torch.cat([torch.full((size,), m) for m, size in enumerate(sizes)])


@pytest.mark.kernels("k-means assignments of rotated features must not flip at float noise")
def test_cluster_density_gives_the_same_rates_when_features_are_scaled_rotated_or_embedded_higher():
    points, _ = _modes()
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64))[
        0
    ].float()
    expected, _, _ = _rates(points, clusters=5)
    for changed in (7.5 * points, points @ rotation, torch.cat([points, torch.zeros(len(points), 496)], dim=1)):
        assert torch.allclose(_rates(changed, clusters=5)[0], expected, atol=1e-9)


def test_cluster_density_at_balance_0_gives_every_mode_an_equal_share_and_at_1_random_s():
    points, mode = _modes()
    rates, keep, _ = _rates(points, clusters=5, coverage_balance=0.0)
    shares = torch.stack([rates[mode == m].sum() for m in range(5)])
    assert torch.allclose(shares, torch.full((5,), keep / 5, dtype=torch.float64), rtol=1e-6)
    rates, keep, _ = _rates(points, clusters=5, coverage_balance=1.0)
    assert torch.allclose(rates, torch.full_like(rates, keep / len(points)))


def test_the_floor_keeps_a_dominant_burst_from_collapsing_the_plan():
    """One burst holds 90% of the pool. Balanced shares give the other 10% most of the budget; a floor f keeps
    every sample at f times random's rate or more, so the draw's effective sample share stays above the bound
    stated here, 0.5 at f = 0.5 (at least f ** 2, since every p_i >= f / N)."""
    points, mode = _modes(sizes=(900, 25, 25, 25, 25))
    rates, keep, info = _rates(points, clusters=5, floor=0.5)
    random_rate = keep / len(points)
    assert rates.min().item() >= 0.5 * random_rate - 1e-12
    assert info["effective_sample_share"] > 0.5
    bare, _, bare_info = _rates(points, clusters=5, floor=0.0)
    assert bare_info["effective_sample_share"] < info["effective_sample_share"]


def test_on_a_pool_with_no_structure_the_plan_matches_random_s_expectation():
    generator = torch.Generator().manual_seed(2)
    points = torch.nn.functional.normalize(torch.randn(900, 32, generator=generator), dim=1)
    rates, keep, info = _rates(points, floor=0.25, coverage_guard=True)
    random_rate = keep / len(points)
    assert rates.sum().item() == pytest.approx(keep)
    assert ((rates / random_rate - 1).abs() < 0.6).all()  # no sample far from random's rate
    assert info["effective_sample_share"] > 0.9


def test_the_junk_guard_gives_a_cloud_of_isolated_points_no_more_than_its_random_share():
    """Forty isolated points (mutually near-orthogonal, far from the modes) beside five coherent modes: balanced
    shares would lift them (k-means makes clusters of one or loose clusters of them); the guard caps them."""
    points, mode = _modes(sizes=(300, 200, 100, 60, 40), dim=64)
    generator = torch.Generator().manual_seed(3)
    junk = torch.nn.functional.normalize(torch.randn(40, 64, generator=generator), dim=1) * 3
    pool = torch.cat([points, junk])
    is_junk = torch.cat([torch.zeros(len(points), dtype=torch.bool), torch.ones(40, dtype=torch.bool)])
    unguarded, keep, _ = _rates(pool, coverage_balance=0.0)
    random_share = keep * 40 / len(pool)
    assert unguarded[is_junk].sum() > 1.5 * random_share  # the failure the guard exists for
    guarded_rates, _, info = _rates(pool, coverage_balance=0.0, coverage_guard=True)
    assert guarded_rates[is_junk].sum() <= random_share + 1e-9
    # k-means puts a few isolated points into a real mode's cluster, where they get that mode's rate (their
    # group's share); the rest form clusters of one or loose clusters, and those are the ones capped.
    assert 30 / len(pool) <= info["coverage_guarded_share"] <= 45 / len(pool)
    # The rarest coherent mode (40 of 740) is not mistaken for junk: it keeps more than its random share.
    assert guarded_rates[len(points) - 40 : len(points)].sum() > keep * 40 / len(pool)
