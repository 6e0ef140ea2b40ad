"""The pruning engine: budgets, InfoBatch's rule, scorers, resume, and the run-level rate."""

import math

import pytest
import torch

from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.engine import load_checkpoint
from ssl_emp.pruning import SELECTORS, Pruner, PruningSettings, SampleStats, ScoreTable, gini, supervised_emp_score
from ssl_emp.pruning.scorers import SCORERS
from ssl_emp.pruning.stats import spearman

N = 1000


def _table(seed=0, unseen=0):
    table = ScoreTable(N)
    generator = torch.Generator().manual_seed(seed)
    seen = torch.arange(unseen, N)
    table.record(seen, torch.rand(seen.numel(), generator=generator), epoch=0)
    table.set_scores(seen, torch.rand(seen.numel(), generator=generator))
    return table


@pytest.mark.parametrize("selector", ["random", "topk", "eps_greedy", "infobatch"])
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.9, 0.95])
def test_selectors_keep_their_budget(selector, rate):
    """Every matched selector keeps exactly its budget, InfoBatch included (it drops an exact count)."""
    cfg = PruningSettings(selector=selector, rate=rate)
    plan = SELECTORS[selector](cfg).select(_table(), rate, torch.Generator().manual_seed(1))
    assert plan.indices.unique().numel() == len(plan)  # no sample twice
    assert len(plan) == round((1 - rate) * N)


@pytest.mark.parametrize("selector", ["random", "topk", "eps_greedy", "infobatch"])
@pytest.mark.parametrize("scorer", ["loss", "ucb"])
def test_run_level_rate_is_met_or_refused_for_every_rate(selector, scorer):
    """Rates 0.1 to 0.9 over a 16-epoch run with a warm-up and InfoBatch's annealing: the plans skip the
    requested fraction of sample-forwards within 0.005, or the run is refused up front, saying why."""
    for tenth in range(1, 10):
        rate = tenth / 10
        cfg = PruningSettings(scorer=scorer, selector=selector, rate=rate, warmup_epochs=1, anneal=0.125)
        try:
            pruner = Pruner(500, 16, seed=tenth, **cfg.as_dict())
        except ValueError as exc:
            assert rate >= 0.8 and "cannot be reached" in str(exc)
            continue
        forwards = 0
        for epoch in range(16):
            plan = pruner.plan(epoch)
            output = SampleStats(torch.rand(len(plan)), torch.rand(len(plan)))
            pruner.observe(plan.indices, output, epoch)
            forwards += len(plan)
        assert 1 - forwards / (16 * 500) == pytest.approx(rate, abs=0.005)


def test_topk_keeps_highest_scores_and_unseen_first():
    table = _table(unseen=50)
    plan = SELECTORS["topk"](PruningSettings()).select(table, 0.5, torch.Generator().manual_seed(0))
    kept = set(plan.indices.tolist())
    assert set(range(50)) <= kept  # unseen samples start at +inf and are trained on
    threshold = table.scores[plan.indices].min()
    assert (table.scores[[i for i in range(N) if i not in kept]] <= threshold).all()


def test_eps_greedy_explores_outside_the_top():
    table = _table()
    plan = SELECTORS["eps_greedy"](PruningSettings(eps=0.2)).select(table, 0.5, torch.Generator().manual_seed(0))
    top = set(table.scores.topk(400).indices.tolist())  # the greedy part: (1 - eps) of the 500 kept
    outside = [i for i in plan.indices.tolist() if i not in top]
    assert len(outside) == 100  # eps of the budget, drawn from outside the greedy top


def test_published_infobatch_drops_what_the_papers_rule_drops():
    """Scores 0..999: the mean is 499.5, so samples 0..499 are below it. r = 0.5 drops each by a coin flip:
    about 250 of them (binomial, sd 11), none above the mean; the kept low ones weigh 1 / (1 - r) = 2."""
    table = ScoreTable(N)
    table.set_scores(torch.arange(N), torch.arange(N, dtype=torch.float32))
    cfg = PruningSettings(selector="infobatch", infobatch_r=0.5)
    plan = SELECTORS["infobatch"](cfg).select(table, 0.0, torch.Generator().manual_seed(0))
    dropped = sorted(set(range(N)) - set(plan.indices.tolist()))
    assert abs(len(dropped) - 250) <= 4 * 11 and max(dropped) < 500
    low = plan.indices < 500
    assert torch.all(plan.weights[low] == 2.0) and torch.all(plan.weights[~low] == 1.0)
    assert plan.weights.sum().item() == pytest.approx(N, rel=0.05)  # expected gradient unchanged
    for r, expected in ((0.0, 0), (1.0, 500)):
        cfg = PruningSettings(selector="infobatch", infobatch_r=r)
        plan = SELECTORS["infobatch"](cfg).select(table, 0.0, torch.Generator().manual_seed(0))
        assert N - len(plan) == expected


def test_published_infobatch_runs_without_a_rate_and_anneals_ceil_of_one_minus_delta():
    cfg = PruningSettings(scorer="loss", selector="infobatch", infobatch_r=0.5, anneal=0.125)
    pruner = Pruner(N, 10, seed=0, **cfg.as_dict())
    assert pruner.active and pruner.requested_rate is None
    # ceil((1 - 0.875) * 10) = 2 annealed epochs; the warm-up epoch is full too.
    assert [pruner.is_pruned_epoch(e) for e in range(10)] == [False] + [True] * 7 + [False] * 2
    pruner.table.load_state_dict(_table().state_dict())
    assert len(pruner.plan(3)) < N


def test_published_infobatch_with_a_rate_is_refused():
    with pytest.raises(ValueError, match="would be ignored"):
        PruningSettings(selector="infobatch", infobatch_r=0.5, rate=0.3)


def test_matched_infobatch_drops_below_mean_first():
    table = ScoreTable(N)
    table.set_scores(torch.arange(N), torch.arange(N, dtype=torch.float32))
    select = SELECTORS["infobatch"](PruningSettings(selector="infobatch")).select
    plan = select(table, 0.3, torch.Generator().manual_seed(0))
    assert set(range(500, N)) <= set(plan.indices.tolist())  # 300 dropped, all from the 500 below the mean
    # The r it reports is what it did: the share of the below-mean samples it dropped.
    assert plan.info["infobatch_r"] == pytest.approx((N - len(plan)) / 500) and len(plan) == 700
    plan = select(table, 0.7, torch.Generator().manual_seed(0))  # 700 to drop: the 778 lowest are candidates
    assert set(range(778, N)) <= set(plan.indices.tolist()) and plan.info["infobatch_r"] <= 0.9


def test_annealing_and_warmup_epochs_are_full_and_the_run_rate_is_kept():
    cfg = PruningSettings(scorer="loss", selector="infobatch", rate=0.5, warmup_epochs=1, anneal=0.25)
    pruner = Pruner(N, 8, seed=0, **cfg.as_dict())
    pruner.table.load_state_dict(_table().state_dict())
    pruned = [pruner.is_pruned_epoch(e) for e in range(8)]
    assert pruned == [False, True, True, True, True, True, False, False]  # last 25% anneal on full data
    assert len(pruner.plan(7)) == N and pruner.plan(7).weights is None
    assert pruner.epoch_rate == pytest.approx(0.5 * 8 / 5)  # pruned epochs make up for the full ones


def test_unreachable_rate_is_explained():
    with pytest.raises(ValueError, match="cannot be reached"):
        Pruner(N, 10, selector="random", rate=0.9, warmup_epochs=2)


def _output(loss, embedding=None, agreement=None, chance=None):
    loss = torch.as_tensor(loss, dtype=torch.float32)
    return SampleStats(
        loss,
        agreement if agreement is not None else torch.zeros_like(loss),
        embedding=embedding,
        chance_loss=None if chance is None else torch.full_like(loss, chance),
    )


def _visit(scorer, table, idx, loss, epoch, **output):
    scorer(_output(loss, **output), table, idx, epoch=epoch)
    table.record(idx, torch.as_tensor(loss, dtype=torch.float32), epoch)


def test_drift_is_how_fast_a_sample_moves_read_against_the_time_since():
    scorer = SCORERS["emp"](PruningSettings(scorer="emp", memory="drift"))
    table, idx = ScoreTable(3), torch.arange(3)
    _visit(scorer, table, idx, [1.0, 1.0, 1.0], 0, embedding=torch.eye(3))
    moved = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0], [0, 0, -1.0]])  # same place, 45 degrees, opposite
    _visit(scorer, table, idx, [1.0, 1.0, 1.0], 2, embedding=moved)  # two epochs after the first visit
    rates = torch.tensor([0.0, 1 - 2**-0.5, 2.0]) / 2
    assert scorer.memory_now(table, epoch=3).tolist() == pytest.approx((rates * 1).tolist(), abs=1e-6)
    assert scorer.memory_now(table, epoch=6).tolist() == pytest.approx((rates * 4).tolist(), abs=1e-6)


def test_time_forms_keep_growing_while_a_sample_is_left_out():
    """Read at selection, for every sample: a skipped sample's wait, and what it may have forgotten, grow."""
    table, idx = ScoreTable(2), torch.arange(2)
    for form in ("recency", "loss_change"):
        scorer = SCORERS["emp"](PruningSettings(scorer="emp", memory=form))
        table = ScoreTable(2)
        _visit(scorer, table, idx, [2.0, 2.0], 0)
        _visit(scorer, table, idx[:1], [2.5], 5)  # sample 0's loss rose 0.1 a epoch: forgotten
        _visit(scorer, table, idx[1:], [1.0], 3)  # sample 1's fell: still learning, no forgetting
        assert scorer.memory_now(table, epoch=5 + 1).tolist() == pytest.approx(
            [0.1, 0.0] if form == "loss_change" else [1.0, 3.0]
        )
        assert scorer.memory_now(table, epoch=5 + 5)[0] > scorer.memory_now(table, epoch=5 + 1)[0]


def test_loss_change_is_taken_above_chance_so_a_larger_batch_is_not_forgetting():
    """NT-Xent grows with log(candidates): the same sample, as well learnt, in a batch of 4x the negatives."""
    scorer = SCORERS["emp"](PruningSettings(scorer="emp", memory="loss_change"))
    table, idx = ScoreTable(1), torch.arange(1)
    _visit(scorer, table, idx, [math.log(255) + 0.5], 0, chance=math.log(255))
    _visit(scorer, table, idx, [math.log(1023) + 0.5], 1, chance=math.log(1023))
    assert scorer.memory_now(table, epoch=3).tolist() == pytest.approx([0.0], abs=1e-6)


def test_emp_scores_mean_the_same_whatever_the_scale_of_loss_and_memory():
    """beta has one meaning on every dataset: rescaling the loss and the memory term (say, another
    temperature) leaves the EMP selection scores, z-scored over the whole table, unchanged."""
    torch.manual_seed(0)
    loss, agreement = torch.rand(64) * 3 + 2, torch.rand(64)
    scores = []
    for scale in (1.0, 10.0):
        scorer = SCORERS["emp"](PruningSettings(scorer="emp", memory="agreement", beta=1.0))
        table = ScoreTable(64)
        _visit(scorer, table, torch.arange(64), loss * scale, 0, agreement=agreement * scale + 5)
        scores.append(scorer.selection_scores(table, epoch=1))
    assert torch.allclose(scores[0], scores[1], atol=1e-4)
    assert scores[0].mean().abs() < 1e-4  # each term is centred on the table's mean


@pytest.mark.parametrize("rate", [0.5, 0.7, 0.9])
def test_the_emp_default_starves_no_sample(rate):
    """Under the EMP default at rate r, no sample waits more than 3 / (1 - r) epochs between visits, even where
    the loss alone would leave the easy half out for good (the control below does)."""
    epochs, n = 60, 200
    generator = torch.Generator().manual_seed(0)
    easy = torch.arange(n) < n // 2  # the easy half's loss stays below every hard sample's
    waits = {}
    for label, method in (("emp", dict(scorer="emp")), ("loss top-k", dict(scorer="loss", selector="topk"))):
        pruner = Pruner(n, epochs, rate=rate, anneal=0.0, seed=0, **method)
        last, longest = torch.full((n,), -1), torch.zeros(n, dtype=torch.long)
        for epoch in range(epochs):
            plan = pruner.plan(epoch)
            for batch in plan.indices.split(32):
                loss = torch.where(easy[batch], 1.0, 3.0) + 0.3 * torch.rand(len(batch), generator=generator)
                embedding = torch.nn.functional.normalize(torch.randn(len(batch), 8, generator=generator), dim=1)
                pruner.observe(
                    batch, SampleStats(loss, embedding=embedding, chance_loss=torch.full_like(loss, 4.0)), epoch
                )
            visited = plan.indices
            longest[visited] = torch.maximum(longest[visited], epoch - last[visited])
            last[visited] = epoch
        longest = torch.maximum(longest, epochs - last)  # a wait still open at the end counts too
        waits[label] = int(longest.max())
    assert pruner.cfg.selector == "topk" and waits["emp"] <= 3 / (1 - rate)
    assert waits["loss top-k"] > 3 / (1 - rate)  # the control: the test can fail


def test_emp_with_beta_ranks_real_simclr_samples_differently_from_the_loss(tiny_overrides):
    """On a real pretraining run, the default EMP form does not rank like the loss (the failure of the
    agreement forms: SimCLR's loss is logsumexp - agreement / tau, so they rank almost as the loss does)."""
    cfg = load_pretrain_config(
        "configs/default.yaml",
        [
            *tiny_overrides,
            "train.epochs=6",
            "pruning.scorer=emp",
            "pruning.selector=infobatch",
            "pruning.rate=0.5",
            "pruning.beta=1",
        ],
    )
    result = pretrain(cfg, show_progress=False)
    rho = [h["pruning/memory_spearman"] for h in result.history if h.get("pruning/memory_spearman") is not None]
    assert rho and max(rho) < 0.9
    pruner = Pruner(1347, 6, **cfg.pruning.model_dump())
    pruner.load_state_dict(load_checkpoint(result.checkpoint)["pruning"])
    scores = pruner.scorer.selection_scores(pruner.table, epoch=6, keep=0.5)  # what the next selection reads
    last_loss = pruner.table.last_loss(torch.arange(1347))
    seen = pruner.table.last_epoch == 5
    assert spearman(scores[seen], last_loss[seen]) < 0.95  # the scores are not the loss reordered


def test_ucb_puts_rarely_visited_samples_first():
    """Two samples with the same recent losses: the one visited once outranks the one visited five times,
    and a sample's bound rises while it is left out (t grows, n stays)."""
    cfg = PruningSettings(scorer="ucb", selector="topk", rate=0.5, ucb_c=1.0)
    scorer, table = SCORERS["ucb"](cfg), ScoreTable(2)
    for epoch in range(5):
        idx = torch.arange(2) if epoch == 0 else torch.tensor([1])
        scores = scorer(SampleStats(torch.full((len(idx),), 2.0), torch.zeros(len(idx))), table, idx, epoch)
        table.record(idx, torch.full((len(idx),), 2.0), epoch)
        table.set_scores(idx, scores)
    assert table.visits.tolist() == [1, 5] and table.scores.tolist() == [2.0, 2.0]
    at5 = scorer.selection_scores(table, epoch=5)
    assert at5[0] > at5[1] > 2.0
    assert scorer.selection_scores(table, epoch=9)[0] > at5[0]


def test_supervised_emp_is_cross_entropy_plus_entropy():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    p = logits.softmax(1)
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none") - 0.5 * (p * p.log()).sum(1)
    assert torch.allclose(supervised_emp_score(logits, labels, beta=0.5), expected, atol=1e-6)


def test_gini():
    assert gini(torch.ones(10)) == pytest.approx(0.0)
    assert gini(torch.tensor([0, 0, 0, 10])) == pytest.approx(0.75)


def test_spearman_agrees_with_scipy():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    a = torch.randint(0, 5, (50,)).float()  # ties
    b = a + torch.randn(50)
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert spearman(a, torch.ones(50)) is None


def _cfg(tiny_overrides, *extra):
    return load_pretrain_config(
        "configs/default.yaml",
        [
            *tiny_overrides,
            "pruning.scorer=emp",
            "pruning.selector=infobatch",
            "pruning.rate=0.5",
            "pruning.anneal=0",
            *extra,
        ],
    )


def test_pretrain_at_rate_07_trains_30_percent_and_reports_it(tiny_overrides):
    result = pretrain(_cfg(tiny_overrides, "pruning.rate=0.7", "train.epochs=6"), show_progress=False)
    assert result.achieved_rate == pytest.approx(0.7, abs=0.03)
    assert result.sample_forwards == pytest.approx(0.3 * 6 * 1347, rel=0.1)
    last = result.history[-1]
    assert {
        "pruning/requested_rate",
        "pruning/achieved_rate",
        "pruning/visits_gini",
        "pruning/visit_histogram",
        "pruning/infobatch_r",
        "pruning/score_p50",
    } <= set(last)
    assert sum(last["pruning/visit_histogram"]) == 1347


@pytest.mark.kernels("a resumed run retraces the uninterrupted one's float ops")
def test_resumed_run_builds_the_same_plans(tiny_overrides, tmp_path):
    import shutil

    overrides = ["train.epochs=4", "train.checkpoint_every=2"]
    full = pretrain(_cfg(tiny_overrides, *overrides), show_progress=False)
    shutil.copytree(full.run_dir, tmp_path / "runs" / "cut")
    cut = tmp_path / "runs" / "cut" / "checkpoints"
    shutil.copy(cut / "epoch_0002.pt", cut / "last.pt")
    resumed = pretrain(_cfg(tiny_overrides, *overrides, "run.name=cut", "run.resume=true"), show_progress=False)
    a, b = load_checkpoint(full.checkpoint)["pruning"]["table"], load_checkpoint(resumed.checkpoint)["pruning"]["table"]
    assert torch.equal(a["visits"], b["visits"]) and torch.equal(a["last_epoch"], b["last_epoch"])
    assert torch.allclose(a["scores"], b["scores"], atol=1e-5)
    assert [h["pruning/epoch_kept"] for h in resumed.history] == [h["pruning/epoch_kept"] for h in full.history[2:]]
    assert resumed.sample_forwards == full.sample_forwards


@pytest.mark.parametrize("memory", ["loss_change", "drift", "recency", "entropy"])
@pytest.mark.parametrize("scorer", ["loss", "emp", "ucb"])
def test_observing_a_step_never_needs_the_values_of_its_tensors(scorer, memory):
    """Per-step scoring must stay on the device: any read of a tensor's values on the host (.item(), bool(),
    a boolean-mask index, nonzero(), unique(): Python-level or inside an op) is a GPU sync every step.
    On the meta device tensors have shapes but no values, so every such read fails, wherever it happens."""
    pruner = Pruner(32, 4, scorer=scorer, selector="infobatch", rate=0.3, memory=memory, device="meta")
    stats = SampleStats(*(torch.empty(8, device="meta") for _ in range(4)), torch.empty(8, 4, device="meta"))
    pruner.observe(torch.arange(8, device="meta"), stats, epoch=0)
    pruner.observe(torch.arange(8, 16, device="meta"), stats, epoch=0)
    pruner.observe(torch.arange(8, device="meta"), stats, epoch=1)  # a revisit reads the previous visit
    assert pruner.table.scores.shape == (32,) and pruner.sample_forwards == 24


def test_the_meta_device_check_catches_a_data_dependent_op():
    """The check above is not vacuous: an op whose result depends on values fails on meta tensors."""
    scores = torch.empty(8, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        scores[scores > 0].sum().item()
