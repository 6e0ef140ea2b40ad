"""ssl_emp.pruning as a library: keyword construction, the DataLoader sampler, one call per step, DDP."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ssl_emp.pruning import PrunedBatchSampler, PrunedSampler, Pruner, SampleStats, WithIndex, near_equal_batches


def test_keyword_construction_picks_the_documented_defaults_and_names_bad_settings():
    assert (Pruner(100, 20, rate=0.7).cfg.scorer, Pruner(100, 20, rate=0.7).cfg.selector) == ("loss", "random")
    assert Pruner(100, 20, rate=0.7, scorer="emp").cfg.selector == "eps_greedy"
    assert not Pruner(100, 10).active  # no rate: nothing is pruned
    with pytest.raises(TypeError, match="unknown pruning setting.*betta.*known: rate, scorer, selector, beta"):
        Pruner(100, 10, rate=0.5, betta=2.0)
    with pytest.raises(ValueError, match="unknown selector 'infobach'; known: full, random"):
        Pruner(100, 10, rate=0.5, selector="infobach")
    with pytest.raises(ValueError, match="would be ignored"):
        Pruner(100, 10, rate=0.5, selector="infobatch", infobatch_r=0.5)


@pytest.mark.parametrize("selector", ["random", "rs2", "infobatch", "topk", "eps_greedy"])
def test_planned_size_is_the_plans_size(selector):
    pruner = Pruner(203, 8, rate=0.6, scorer="loss", selector=selector)
    for epoch in range(8):
        expected = pruner.planned_size(epoch)
        plan = pruner.plan(epoch)
        assert len(plan) == expected
        pruner.observe(plan.indices, SampleStats(torch.rand(len(plan))), epoch)


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y))


def _step_weights(pruner, indices, per_sample):
    """``pruner.step``'s loss and the weight it gives each sample's loss, as autograd sees it:
    ``B * d loss / d loss_i`` (1 for a plain mean)."""
    if per_sample.requires_grad:
        per_sample.retain_grad()
    else:
        per_sample.requires_grad_()
    loss = pruner.step(indices, per_sample)
    loss.backward()
    return loss, per_sample.grad * len(indices)


def test_three_lines_in_a_plain_loop_prune_at_the_rate_and_weight_the_loss():
    """A supervised loop on digits with matched InfoBatch: every epoch trains exactly its plan and the run skips
    the requested fraction. step()'s loss is a weighted mean of the per-sample losses whose weights (read from
    the gradient) are 1 in full-data epochs; in pruned ones only the lowest scorers are dropped, the kept ones
    among them share one weight above 1, and the weights add up to the dataset size (the loss stays unbiased)."""
    torch.manual_seed(0)
    dataset = _digits()
    n = len(dataset)
    model = torch.nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(n, 8, rate=0.5, scorer="loss", selector="infobatch")
    loader = DataLoader(WithIndex(dataset), batch_sampler=pruner.batch_sampler(128))
    trained_per_epoch = []
    for epoch in range(8):
        loader.batch_sampler.set_epoch(epoch)
        scores = pruner.table.scores.clone()  # what this epoch's plan is built from
        trained, weights = [], []
        for indices, (x, y) in loader:
            per_sample = F.cross_entropy(model(x), y, reduction="none")
            optimizer.zero_grad()
            loss, w = _step_weights(pruner, indices, per_sample)
            assert loss.item() == pytest.approx((w * per_sample.detach()).mean().item(), rel=1e-5)
            optimizer.step()
            trained.append(indices)
            weights.append(w)
        trained, weights = torch.cat(trained), torch.cat(weights)
        trained_per_epoch.append(trained)
        if not pruner.is_pruned_epoch(epoch):
            assert len(trained) == n and torch.equal(weights, torch.ones(n))
            continue
        assert len(trained) < n
        up = weights > 1
        assert up.any() and torch.allclose(weights[up], weights[up][0]) and (weights[~up] == 1).all()
        assert weights.sum().item() == pytest.approx(n, rel=1e-4)
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[trained] = False
        low = torch.cat([scores[dropped], scores[trained[up]]])
        assert low.max() <= scores[trained[~up]].min()
    assert all(t.unique().numel() == t.numel() for t in trained_per_epoch)
    assert pruner.achieved_rate() == pytest.approx(0.5, abs=0.005)
    assert (pruner.table.visits > 0).all()


def test_published_infobatch_weighs_exactly_the_kept_below_mean_samples_by_one_over_one_minus_r():
    torch.manual_seed(0)
    n, r, epochs = 400, 0.3, 6
    difficulty = torch.rand(n)
    pruner = Pruner(n, epochs, selector="infobatch", infobatch_r=r, scorer="loss")
    for epoch in range(epochs):
        plan = pruner.plan(epoch)
        scores = pruner.table.scores.clone()
        trained, weights = [], []
        for indices in plan.indices.split(64):
            _, w = _step_weights(pruner, indices, difficulty[indices] + 0.01 * torch.rand(len(indices)))
            trained.append(indices)
            weights.append(w)
        trained, weights = torch.cat(trained), torch.cat(weights)
        if not pruner.is_pruned_epoch(epoch):
            assert len(trained) == n and torch.equal(weights, torch.ones(n))
            continue
        below = scores < scores.mean()
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[trained] = False
        assert dropped.any() and below[dropped].all()
        # About r of the below-mean samples are dropped (a coin flip each).
        assert int(dropped.sum()) == pytest.approx(r * int(below.sum()), abs=4 * (n * r * (1 - r)) ** 0.5)
        torch.testing.assert_close(weights, torch.where(below[trained], 1 / (1 - r), 1.0))


@pytest.mark.parametrize(
    "settings",
    [
        {"rate": 0.5, "selector": "random"},
        {"rate": 0.5, "selector": "rs2"},
        {"rate": 0.5, "selector": "topk"},
        {"rate": 0.5, "scorer": "emp", "selector": "eps_greedy", "memory": "loss_change"},
        {"rate": 0.5, "selector": "infobatch", "infobatch_rescale": False},
        {"selector": "infobatch", "infobatch_r": 0.5, "infobatch_rescale": False},
    ],
    ids=["random", "rs2", "topk", "eps_greedy", "infobatch-unscaled", "infobatch-published-unscaled"],
)
def test_a_selector_that_does_not_reweight_steps_with_the_plain_mean(settings):
    torch.manual_seed(0)
    pruner = Pruner(120, 5, **settings)
    for epoch in range(5):
        for indices in pruner.plan(epoch).indices.split(32):
            per_sample = torch.rand(len(indices))
            loss, w = _step_weights(pruner, indices, per_sample)
            assert loss.item() == per_sample.mean().item()
            torch.testing.assert_close(w, torch.ones(len(indices)))


def test_sampler_moves_to_the_next_epoch_by_itself_and_len_matches_iteration():
    pruner = Pruner(100, 4, rate=0.25, selector="random", anneal=0.25)
    sampler = pruner.sampler()
    sizes = []
    for _ in range(4):
        expected = len(sampler)
        drawn = list(sampler)
        assert len(drawn) == expected
        sizes.append(len(drawn))
    assert sizes == [100, 50, 50, 100] and sampler.epoch == 4  # warm-up, two pruned epochs, annealing


def test_sampler_shards_are_disjoint_equal_and_cover_the_plan_but_a_remainder():
    pruner = Pruner(101, 3, rate=0.3, selector="random")
    shards = [list(PrunedSampler(pruner, num_replicas=3, rank=r)) for r in range(3)]
    plan = pruner.plan(0).indices.tolist()
    assert len({len(s) for s in shards}) == 1
    together = sorted(sum(shards, []))
    assert len(together) == len(set(together)) == 99 and set(together) <= set(plan)


def test_batch_sampler_cuts_each_plan_into_near_equal_batches_where_a_plain_loader_leaves_a_tail_of_one():
    """The Lightning example's crash: 1797 samples at rate 0.5 over 10 epochs plan 513 in odd pruned epochs,
    and DataLoader(batch_size=128) ends those with a batch of 1, which BatchNorm cannot train on. The batch
    sampler cuts every epoch as the trainer does (near_equal_batches): sizes within one of each other."""
    plain = DataLoader(range(1797), batch_size=128, sampler=Pruner(1797, 10, rate=0.5).sampler())
    tails = []
    for epoch in range(10):
        plain.sampler.set_epoch(epoch)
        tails.append(min(len(b) for b in plain))
    assert 1 in tails

    pruner = Pruner(1797, 10, rate=0.5)
    batches = pruner.batch_sampler(128)
    for epoch in range(10):
        batches.set_epoch(epoch)
        expected = len(batches)
        drawn = list(batches)
        sizes = [len(b) for b in drawn]
        plan = pruner.plan(epoch).indices.tolist()
        assert len(drawn) == expected and sum(drawn, []) == plan  # the plan, in its order, each sample once
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 128 * 2 / 3
        assert [len(b) for b in near_equal_batches(torch.tensor(plan), 128)] == sizes  # the trainer's cut


def test_batch_sampler_gives_every_rank_a_disjoint_share_in_equal_batches():
    pruner = Pruner(1001, 3, rate=0.3, selector="random")
    shares = [list(PrunedBatchSampler(pruner, 50, num_replicas=3, rank=r)) for r in range(3)]
    sizes = [[len(b) for b in share] for share in shares]
    assert sizes[0] == sizes[1] == sizes[2] and max(sizes[0]) - min(sizes[0]) <= 1  # ranks step together
    together = sorted(i for share in shares for batch in share for i in batch)
    assert len(together) == len(set(together)) == 999 and set(together) <= set(pruner.plan(0).indices.tolist())


def _ddp_worker(rank, world_size, port, out_dir):
    """A user's loop on 2 gloo ranks: the sampler shards each epoch, step() gathers, tables stay identical."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different data order per rank would break nothing: the plan decides
    dataset = _digits()
    model = torch.nn.Linear(64, 10)
    pruner = Pruner(len(dataset), 5, rate=0.4, scorer="loss", selector="infobatch", seed=3)
    loader = DataLoader(WithIndex(dataset), batch_sampler=pruner.batch_sampler(64))
    trained = []
    for epoch in range(5):
        loader.batch_sampler.set_epoch(epoch)
        for indices, (x, y) in loader:
            pruner.step(indices, F.cross_entropy(model(x), y, reduction="none")).backward()
            trained.append((epoch, indices))
    torch.save(
        {
            "table": pruner.table.state_dict(),
            "trained": trained,
            "forwards": pruner.sample_forwards,
            "rate": pruner.achieved_rate(),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_loop_keeps_identical_tables_and_trains_each_planned_sample_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key, value in r0["table"].items():
        torch.testing.assert_close(value, r1["table"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    for epoch in range(5):
        mine = torch.cat([i for e, i in r0["trained"] if e == epoch])
        theirs = torch.cat([i for e, i in r1["trained"] if e == epoch])
        assert len(mine) == len(theirs) and not set(mine.tolist()) & set(theirs.tolist())
        sizes = [len(i) for e, i in r0["trained"] if e == epoch]
        assert sizes == [len(i) for e, i in r1["trained"] if e == epoch] and max(sizes) - min(sizes) <= 1
    assert r0["forwards"] == r1["forwards"] == sum(len(i) for _, i in r0["trained"] + r1["trained"])
    assert r0["rate"] == pytest.approx(0.4, abs=0.01)


def test_importing_the_pruner_loads_nothing_else_of_the_project():
    code = (
        "import sys, ssl_emp.pruning; print(sorted(m for m in sys.modules "
        "if m.startswith(('ssl_emp', 'lightly', 'torchvision', 'eval', 'kornia', 'pydantic'))))"
    )
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded and all(m == "ssl_emp" or m.startswith("ssl_emp.pruning") for m in loaded), loaded


@pytest.mark.parametrize(
    "bad",
    [
        dict(beta=-1.0),
        dict(beta=float("nan")),
        dict(anneal=1.0),
        dict(eps=2.0),
        dict(history=0),
        dict(warmup_epochs=-1),
        dict(infobatch_r=1.5),
        dict(rate=1.0),
    ],
)
def test_the_engine_refuses_settings_outside_their_declared_bounds(bad):
    """The bounds PruningSettings declares hold for a user's own loop too, not only behind the config."""
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=f"^{name}={value}: must be"):
        Pruner(100, 8, **bad)


def test_emp_default_steps_on_the_loss_alone():
    """The default memory form (``spaced``) reads the loss and the visit times, nothing a plain loop lacks."""
    pruner = Pruner(64, 4, rate=0.5, scorer="emp", anneal=0.0)
    for epoch in range(4):
        for batch in pruner.plan(epoch).indices.split(16):
            pruner.step(batch, torch.rand(len(batch)))
    assert pruner.cfg.memory == "spaced" and int(pruner.table.visits.sum()) == pruner.planned_forwards()
    assert torch.isfinite(pruner.scorer.selection_scores(pruner.table, epoch=4, keep=0.5)).all()


def test_emp_drift_without_embeddings_says_what_to_pass():
    pruner = Pruner(64, 4, rate=0.5, scorer="emp", memory="drift", anneal=0.0)
    indices = pruner.plan(0).indices[:16]
    with pytest.raises(ValueError, match=r"needs per-sample embeddings.*SampleStats\(loss, embedding=\.\.\.\)"):
        pruner.step(indices, torch.rand(16))
    pruner.step(indices, SampleStats(torch.rand(16), embedding=torch.randn(16, 8)))  # given them, it steps
