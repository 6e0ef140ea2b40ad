"""The pruning engine: budgets, InfoBatch's rule, scorers, resume, and the run-level rate."""

import pytest
import torch

from ssl_emp.config import PruningConfig, load_pretrain_config
from ssl_emp.engine import load_checkpoint, pretrain
from ssl_emp.methods.base import MethodOutput
from ssl_emp.methods.losses import ntxent_row_stats, per_sample_ntxent
from ssl_emp.pruning import SELECTORS, Pruner, ScoreTable, gini, supervised_emp_score
from ssl_emp.pruning.scorers import SCORERS
from ssl_emp.pruning.scorers.emp import memory_term

N = 1000


def _table(seed=0, unseen=0):
    table = ScoreTable(N)
    generator = torch.Generator().manual_seed(seed)
    seen = torch.arange(unseen, N)
    table.record(seen, torch.rand(seen.numel(), generator=generator), epoch=0)
    table.set_scores(seen, torch.rand(seen.numel(), generator=generator))
    return table


@pytest.mark.parametrize("selector", ["random", "topk", "eps_greedy", "infobatch"])
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.9])
def test_selectors_keep_their_budget(selector, rate):
    """Budget tolerance: exact (+-1 sample) for the deterministic-count selectors; InfoBatch drops by
    coin flips, so its kept count is within 4 binomial standard deviations (about 0.06 N at worst here)."""
    cfg = PruningConfig(selector=selector, rate=rate)
    plan = SELECTORS[selector](cfg).select(_table(), rate, torch.Generator().manual_seed(1))
    assert plan.indices.unique().numel() == len(plan)  # no sample twice
    if selector == "infobatch":
        assert abs(len(plan) - (1 - rate) * N) <= 4 * (N * 0.25) ** 0.5
    else:
        assert abs(len(plan) - round((1 - rate) * N)) <= 1


def test_topk_keeps_highest_scores_and_unseen_first():
    table = _table(unseen=50)
    plan = SELECTORS["topk"](PruningConfig()).select(table, 0.5, torch.Generator().manual_seed(0))
    kept = set(plan.indices.tolist())
    assert set(range(50)) <= kept  # unseen samples start at +inf and are trained on
    threshold = table.scores[plan.indices].min()
    assert (table.scores[[i for i in range(N) if i not in kept]] <= threshold).all()


def test_eps_greedy_explores_outside_the_top():
    table = _table()
    plan = SELECTORS["eps_greedy"](PruningConfig(eps=0.2)).select(table, 0.5, torch.Generator().manual_seed(0))
    top = set(table.scores.topk(400).indices.tolist())  # the greedy part: (1 - eps) of the 500 kept
    outside = [i for i in plan.indices.tolist() if i not in top]
    assert len(outside) == 100  # eps of the budget, drawn from outside the greedy top


def test_infobatch_drops_only_below_mean_and_rescales():
    table = _table()
    cfg = PruningConfig(selector="infobatch", infobatch_r=0.5)
    plan = SELECTORS["infobatch"](cfg).select(table, 0.3, torch.Generator().manual_seed(0))
    below = table.scores < table.scores.mean()
    kept_below = below[plan.indices]
    assert (~below).nonzero().squeeze(1).tolist() == sorted(i for i in plan.indices.tolist() if not below[i])
    assert torch.allclose(plan.weights[kept_below], torch.full((int(kept_below.sum()),), 2.0))  # 1 / (1 - 0.5)
    assert torch.all(plan.weights[~kept_below] == 1.0)
    assert plan.info["infobatch_r"] == 0.5
    # The expected gradient is unchanged: below-mean samples' weights sum to about their count.
    assert plan.weights[kept_below].sum().item() == pytest.approx(float(below.sum()), rel=0.15)


def test_infobatch_matched_budget_reports_r():
    table = _table()
    plan = SELECTORS["infobatch"](PruningConfig(selector="infobatch")).select(table, 0.3, torch.Generator().manual_seed(0))
    fraction_below = float((table.scores < table.scores.mean()).float().mean())
    assert plan.info["infobatch_r"] == pytest.approx(0.3 / fraction_below)


def test_annealing_and_warmup_epochs_are_full_and_the_run_rate_is_kept():
    cfg = PruningConfig(scorer="loss", selector="infobatch", rate=0.5, warmup_epochs=1, anneal=0.25)
    pruner = Pruner(cfg, N, epochs=8, seed=0)
    pruner.table.load_state_dict(_table().state_dict())
    pruned = [pruner.is_pruned_epoch(e) for e in range(8)]
    assert pruned == [False, True, True, True, True, True, False, False]  # last 25% anneal on full data
    assert len(pruner.plan(7)) == N and pruner.plan(7).weights is None
    assert pruner.epoch_rate == pytest.approx(0.5 * 8 / 5)  # pruned epochs make up for the full ones


def test_unreachable_rate_is_explained():
    with pytest.raises(ValueError, match="cannot be reached"):
        Pruner(PruningConfig(selector="random", rate=0.9, warmup_epochs=2), N, epochs=10, seed=0)


def _output(batch=16, seed=0):
    torch.manual_seed(seed)
    z0, z1 = torch.randn(batch, 8), torch.randn(batch, 8)
    entropy, positive_prob = ntxent_row_stats(z0, z1, 0.5)
    return MethodOutput(per_sample_ntxent(z0, z1, 0.5), torch.nn.functional.cosine_similarity(z0, z1), entropy,
                        positive_prob), (z0, z1)


def test_emp_with_beta_zero_ranks_like_loss():
    output, _ = _output()
    indices = torch.arange(16)
    emp = SCORERS["emp"](PruningConfig(scorer="emp", beta=0.0))(output, ScoreTable(16), indices)
    loss = SCORERS["loss"](PruningConfig())(output, ScoreTable(16), indices)
    assert torch.equal(emp.argsort(), loss.argsort())


@pytest.mark.parametrize("form", ["disagreement", "entropy", "forgetting", "agreement"])
def test_memory_term_is_invariant_to_batch_order(form):
    output, (z0, z1) = _output(seed=3)
    perm = torch.randperm(16)
    entropy, positive_prob = ntxent_row_stats(z0[perm], z1[perm], 0.5)
    permuted = MethodOutput(per_sample_ntxent(z0[perm], z1[perm], 0.5),
                            torch.nn.functional.cosine_similarity(z0[perm], z1[perm]), entropy, positive_prob)
    assert torch.allclose(memory_term(output, form)[perm], memory_term(permuted, form), atol=1e-5)


def test_emp_memory_forms_have_their_formulas():
    output, _ = _output()
    assert torch.allclose(memory_term(output, "disagreement"), 1 - output.agreement)
    assert torch.allclose(memory_term(output, "forgetting"), 1 - output.positive_prob)
    assert (output.softmax_entropy > 0).all() and (output.softmax_entropy <= torch.log(torch.tensor(31.0)) + 1e-5).all()


def test_ucb_scores_mean_plus_spread_of_recent_losses():
    table = ScoreTable(2, history=3)
    for epoch, losses in enumerate([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]]):
        table.record(torch.arange(2), torch.tensor(losses), epoch)
    output = MethodOutput(torch.tensor([5.0, 2.0]), torch.zeros(2))
    scores = SCORERS["ucb"](PruningConfig(ucb_c=1.0))(output, table, torch.arange(2))
    assert scores.tolist() == pytest.approx([3.0 + 2.0, 2.0])  # mean 3, std 2; constant losses: no spread


def test_supervised_emp_is_cross_entropy_plus_entropy():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    p = logits.softmax(1)
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none") - 0.5 * (p * p.log()).sum(1)
    assert torch.allclose(supervised_emp_score(logits, labels, beta=0.5), expected, atol=1e-6)


def test_gini():
    assert gini(torch.ones(10)) == pytest.approx(0.0)
    assert gini(torch.tensor([0, 0, 0, 10])) == pytest.approx(0.75)


def _cfg(tiny_overrides, *extra):
    return load_pretrain_config("configs/default.yaml", [
        *tiny_overrides, "pruning.scorer=emp", "pruning.selector=infobatch", "pruning.rate=0.5",
        "pruning.anneal=0", *extra])


def test_pretrain_at_rate_07_trains_30_percent_and_reports_it(tiny_overrides):
    result = pretrain(_cfg(tiny_overrides, "pruning.rate=0.7", "train.epochs=6"), show_progress=False)
    assert result.achieved_rate == pytest.approx(0.7, abs=0.03)
    assert result.sample_forwards == pytest.approx(0.3 * 6 * 1347, rel=0.1)
    last = result.history[-1]
    assert {"pruning/requested_rate", "pruning/achieved_rate", "pruning/visits_gini", "pruning/visit_histogram",
            "pruning/infobatch_r", "pruning/score_p50"} <= set(last)
    assert sum(last["pruning/visit_histogram"]) == 1347


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


@pytest.mark.parametrize("scorer", ["loss", "emp", "ucb"])
def test_observing_a_step_reads_nothing_back_to_the_host(scorer, monkeypatch):
    """Per-step scoring must stay on the device: any host read (.item(), .tolist(), bool(), .cpu()) would be a
    GPU sync every step. On CPU there is no sync to see, so the test forbids the reads themselves."""
    cfg = load_pretrain_config(None, [f"pruning.scorer={scorer}", "pruning.selector=infobatch",
                                      "pruning.rate=0.3"]).pruning
    pruner = Pruner(cfg, num_samples=32, epochs=4, seed=0)
    output = MethodOutput(torch.rand(8), torch.rand(8), torch.rand(8), torch.rand(8))
    pruner.observe(torch.arange(8), output, epoch=0)  # first touch may initialise lazily

    def host_read(*args, **kwargs):
        raise AssertionError("host read during observe()")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    pruner.observe(torch.arange(8, 16), output, epoch=0)
    monkeypatch.undo()
    assert bool(torch.isfinite(pruner.table.scores[:16]).all())
