"""The selection engine at scale (ssl_emp.pruning.clustering): chunking changes no result, the exact path is v3's
arithmetic, the scale path counts bursts exactly and agrees with the exact one, sharded ranks plan alike, and a
rank that planned differently stops the run."""

import importlib.util
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssl_emp.pruning import PlanMismatchError, Pruner, SampleStats
from ssl_emp.pruning import clustering as engine
from ssl_emp.pruning.embeddings import EmbeddingMemory

pytestmark = pytest.mark.kernels(
    "counts at a cosine threshold agree across chunk sizes and with v3 only if matmul blocks round alike"
)

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    """benchmarks/selection_scale.py, which holds v3's engine verbatim as its reference (its own folder on the
    path, as when it runs as a script, for its ``import common``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("selection_scale", ROOT / "benchmarks" / "selection_scale.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _structured(n=3000, d=32, bursts=(400,), seed=0):
    """Scattered modes, tight bursts of near-copies (cosine about 0.99) and a few exact copies: unit rows [n, d]
    and the burst of each row (-1: none)."""
    g = torch.Generator().manual_seed(seed)
    owner = torch.full((n,), -1)
    modes = F.normalize(torch.randn(max(2, n // 200), d, generator=g), dim=1)
    x = modes[torch.randint(0, modes.shape[0], (n,), generator=g)] + 0.7 * torch.randn(n, d, generator=g) / d**0.5
    start = 0
    for b, size in enumerate(bursts):
        centre = F.normalize(torch.randn(1, d, generator=g), dim=1)
        x[start : start + size] = centre + 0.1 * torch.randn(size, d, generator=g) / d**0.5
        owner[start : start + size] = b
        start += size
    x[start : start + 5] = x[start + 5]  # six identical vectors
    return F.normalize(x, dim=1), owner


def _brute_counts(x, assignment, threshold):
    """Every pair inside each cluster compared at once: the definition the engine must meet."""
    near = (x @ x.T >= threshold) & (assignment.unsqueeze(0) == assignment.unsqueeze(1))
    return near.sum(dim=1)


def _whole(x):
    return engine.Shard(x, torch.arange(x.shape[0]), x.shape[0], engine.Ranks())


@pytest.mark.parametrize("exact_limit", [10**9, 0], ids=["exact", "scale"])
def test_chunked_and_unchunked_give_the_same_clustering_and_counts(exact_limit):
    x, _ = _structured()
    results = []
    for chunk_rows in (7, 10**9):
        shard = _whole(x)
        c = engine.cluster(
            shard, 0, torch.Generator().manual_seed(3), exact_limit=exact_limit, leaf_size=128, chunk_rows=chunk_rows
        )
        counts = engine.neighbour_counts(
            shard, c, 0.9, torch.Generator().manual_seed(4), exact_leaf=200, chunk_rows=chunk_rows
        )
        results.append((c, counts))
    (a, counts_a), (b, counts_b) = results
    assert a.exact == (exact_limit > 0) and a.count == b.count > 1
    assert torch.equal(a.assignment, b.assignment) and torch.equal(counts_a, counts_b)
    assert torch.allclose(a.similarity, b.similarity, atol=1e-6)


def test_the_exact_path_gives_v3_counts_and_plans_bit_for_bit():
    bench = _benchmark()
    vectors, _ = bench.synthetic(4000, 64, dtype=torch.float32)
    memory = EmbeddingMemory(4000, seed=0)
    memory.store(torch.arange(4000), vectors, epoch=1)
    counts = memory.neighbour_counts(bench.THRESHOLD)
    reference = bench.v3_counts(vectors)
    assert memory.clusters().exact and torch.equal(counts, reference)
    assert int(reference.max()) > 50  # the planted bursts are there to be counted
    plans = [bench.coverage_plan(c, 1.0, torch.Generator().manual_seed(0)) for c in (counts, reference)]
    assert torch.equal(*plans)


@pytest.mark.parametrize("copies", ["near", "identical"])
def test_a_burst_larger_than_any_chunk_and_any_exact_leaf_is_counted_exactly(copies):
    x, owner = _structured(n=2500, bursts=(900,))
    if copies == "identical":
        x[owner == 0] = x[0].clone()
    shard = _whole(x.half())
    c = engine.cluster(shard, 0, torch.Generator().manual_seed(0), exact_limit=0, leaf_size=100, chunk_rows=64)
    counts = engine.neighbour_counts(shard, c, 0.9, torch.Generator().manual_seed(1), exact_leaf=50, chunk_rows=16)
    burst = owner == 0
    assert c.assignment[burst].unique().numel() == 1, "the burst is one leaf, however large"
    assert torch.equal(counts[burst], _brute_counts(shard.x.float(), c.assignment, 0.9)[burst])
    assert set(counts[burst].tolist()) == {900}


def test_the_scale_path_counts_the_true_density_where_v3_splits_a_burst():
    """Forced onto the scale path at a size the exact path handles: against every pair of the N compared, a
    burst's members keep counts within 5% and most counts are exact. v3's sqrt(N) clusters cut a burst larger
    than sqrt(N) into pieces and count each piece: the difference between the engines, measured here."""
    bench = _benchmark()
    vectors, _ = bench.synthetic(20_000, 64, dtype=torch.float32)
    truth, v3 = bench.true_counts(vectors), bench.v3_counts(vectors)
    memory = EmbeddingMemory(20_000, seed=0, exact_limit=0)
    memory.store(torch.arange(20_000), vectors, epoch=1)
    counts = memory.neighbour_counts(bench.THRESHOLD)
    assert not memory.clusters().exact
    in_bursts = truth > 1000
    relative = (counts[in_bursts] - truth[in_bursts]).abs().double() / truth[in_bursts]
    assert in_bursts.sum() >= 6000 and float(relative.max()) <= 0.05
    assert bench._compare(counts, truth, 20_000)["identical_share"] > 0.9
    assert bench._compare(counts, truth, 20_000)["rate_tv_power1"] < 0.05
    assert float(v3[in_bursts].double().mean()) < 0.2 * float(truth[in_bursts].double().mean())


def test_the_memory_keeps_its_table_in_half_precision_above_the_exact_limit():
    x, owner = _structured(n=1000)
    assert EmbeddingMemory(1000).dtype == torch.float32
    memory = EmbeddingMemory(1000, seed=0, exact_limit=999)
    memory.store(torch.arange(1000), x, epoch=0)
    assert memory.vectors.dtype == torch.float16 and not memory.clusters().exact
    assert set(memory.neighbour_counts(0.9)[owner == 0].tolist()) == {400}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank, world_size, port, exact_limit, out):
    """One rank holding every second sample: its memory's clustering, counts and digest of a coverage plan."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        x, _ = _structured(n=2000)
        mine = torch.arange(rank, 2000, world_size)
        pruner = Pruner(2000, 3, rate=0.5, selector="coverage", anneal=0.0, seed=0)
        pruner.embeddings.exact_limit = exact_limit
        pruner.set_embeddings(mine, x[mine], epoch=1, shard=True)
        plans = []
        for epoch in range(3):
            plan = pruner.plan(epoch)
            share = plan.indices[rank::world_size]
            pruner.observe(share, SampleStats(share.float().sin()), epoch)
            plans.append(plan.indices)
        memory = pruner.embeddings
        assert memory.vectors.shape[0] == mine.numel()
        torch.save(
            {"assignment": memory.clusters().assignment, "counts": memory.neighbour_counts(0.9), "plans": plans},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("exact_limit", [10**9, 0], ids=["exact", "scale"])
def test_two_gloo_ranks_with_sharded_memories_plan_alike(tmp_path, exact_limit):
    mp.start_processes(
        _sharded_worker, args=(2, _free_port(), exact_limit, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["assignment"], r1["assignment"]) and torch.equal(r0["counts"], r1["counts"])
    for a, b in zip(r0["plans"], r1["plans"], strict=True):
        assert torch.equal(a, b)
    assert len(r0["plans"][1]) < 2000
    x, owner = _structured(n=2000)
    one = EmbeddingMemory(2000, seed=0, exact_limit=exact_limit)
    one.store(torch.arange(2000), x, epoch=1)
    single = one.neighbour_counts(0.9)  # the ranks' shards add up to one process's table: the burst counts alike
    assert torch.equal(r0["counts"][owner == 0], single[owner == 0])


def _mismatch_worker(rank, world_size, port, out):
    """Ranks seeded differently plan differently: each must stop with the same one-line error."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        pruner = Pruner(500, 2, rate=0.5, selector="random", anneal=0.0, warmup_epochs=0, seed=rank)
        try:
            pruner.plan(0)
            message = None
        except PlanMismatchError as exc:
            message = str(exc)
        Path(out, f"rank{rank}.txt").write_text(repr(message))
    finally:
        torch.distributed.destroy_process_group()


def test_a_planted_rank_mismatch_stops_every_rank_with_one_line(tmp_path):
    mp.start_processes(_mismatch_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    messages = [eval((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    assert messages[0] == messages[1] and messages[0] is not None
    assert "\n" not in messages[0] and "rank 1's plan for epoch 0 differs from rank 0's" in messages[0]


def test_a_plan_digest_tells_plans_apart():
    plan = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert engine.plan_digest(plan) == engine.plan_digest(plan.clone())
    assert engine.plan_digest(plan) != engine.plan_digest(plan.flip(0))
    weights = torch.ones(1000)
    assert engine.plan_digest(plan, weights) != engine.plan_digest(plan, weights * 1.01)
    assert math.log2(engine.plan_digest(plan) + 1) <= 63
