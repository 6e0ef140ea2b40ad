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

from ssl_emp.pruning import Pruner, PrunedSampler, SampleStats, WithIndex


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


def test_three_lines_in_a_plain_loop_prune_at_the_rate_and_weight_the_loss():
    """A supervised loop on digits with matched InfoBatch: every epoch trains exactly its plan, the run skips
    the requested fraction, and step() returns the plan-weighted mean of the per-sample losses."""
    torch.manual_seed(0)
    dataset = _digits()
    model = torch.nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(len(dataset), 8, rate=0.5, scorer="loss", selector="infobatch")
    loader = DataLoader(WithIndex(dataset), batch_size=128, sampler=pruner.sampler())
    trained_per_epoch, weighted_seen = [], False
    for epoch in range(8):
        loader.sampler.set_epoch(epoch)
        trained = []
        for indices, (x, y) in loader:
            per_sample = F.cross_entropy(model(x), y, reduction="none")
            loss = pruner.step(indices, per_sample)
            weights = pruner._weights[indices]
            assert loss.item() == pytest.approx((weights * per_sample).mean().item(), rel=1e-6)
            weighted_seen |= bool((weights > 1).any())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trained.append(indices)
        trained_per_epoch.append(torch.cat(trained))
    assert [len(t) for t in trained_per_epoch][0] == len(dataset) and len(trained_per_epoch[3]) < len(dataset)
    assert all(t.unique().numel() == t.numel() for t in trained_per_epoch)
    assert pruner.achieved_rate() == pytest.approx(0.5, abs=0.005)
    assert weighted_seen  # InfoBatch's kept low-loss samples weigh 1 / (1 - r)
    assert (pruner.table.visits > 0).all()


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
    loader = DataLoader(WithIndex(dataset), batch_size=64, sampler=pruner.sampler())
    trained = []
    for epoch in range(5):
        loader.sampler.set_epoch(epoch)
        for indices, (x, y) in loader:
            pruner.step(indices, F.cross_entropy(model(x), y, reduction="none")).backward()
            trained.append((epoch, indices))
    torch.save({"table": pruner.table.state_dict(), "trained": trained, "forwards": pruner.sample_forwards,
                "rate": pruner.achieved_rate()}, os.path.join(out_dir, f"rank{rank}.pt"))
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
    assert r0["forwards"] == r1["forwards"] == sum(len(i) for _, i in r0["trained"] + r1["trained"])
    assert r0["rate"] == pytest.approx(0.4, abs=0.01)


def test_importing_the_pruner_loads_nothing_else_of_the_project():
    code = ("import sys, ssl_emp.pruning; print(sorted(m for m in sys.modules "
            "if m.startswith(('ssl_emp', 'lightly', 'torchvision', 'eval', 'kornia', 'pydantic'))))")
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded and all(m == "ssl_emp" or m.startswith("ssl_emp.pruning") for m in loaded), loaded
