"""The selection engine's arithmetic at any scale: spherical k-means (flat, or hierarchical for large N) and each
sample's near-neighbour count inside its cluster, in chunks of bounded size, on the memory's device, over a memory
that may be sharded across ranks.

Two paths, one answer where both run:

- **exact** (N at most :data:`EXACT_LIMIT`): flat spherical k-means into ``clusters`` groups (default sqrt(N))
  and every pair inside a cluster compared, as benchmark v3 did; only the assignment and the comparisons are cut
  into row chunks, which leaves each row's arithmetic as it was. A single process gets v3's counts bit for bit.
- **scale** (larger N): hierarchical k-means (Vo et al., 2024): a node larger than ``leaf_size`` is split into
  at most ``branching`` children, its centroids fitted on a sample of at most ``POINTS_PER_CENTROID`` members per
  child (faiss's rule of thumb) and every member assigned once. Children whose centroids nearly coincide
  (cosine at least :data:`MERGE_COSINE`: halves of one burst of near-copies) are merged back, so a burst stays
  one leaf however large. Neighbours are counted against every member of a leaf up to ``exact_leaf`` members,
  beyond that against a uniform sample of ``exact_leaf`` of them, scaled to the leaf: a burst of identical
  vectors is still counted exactly, and no cluster's square is ever built. The cost is about
  ``N * (levels * branching + leaf_size) * d`` multiply-adds, near-linear in N.

Under torch.distributed with a sharded memory each rank holds its own rows. Rank-local work (assignment,
counting) runs on those rows; what must agree is made once: Lloyd's sums and counts are all-reduced, centroids of
the hierarchical nodes are fitted on rank 0 and broadcast, and every per-sample result is summed into a global
[N] vector that every rank then holds. :func:`plan_digest` lets ranks check that they planned alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

EXACT_LIMIT = 131_072  # up to here the exact path runs (its cost is about N^1.5 d: 11 s at 100k x 128 on 2 cores)
CHUNK_ROWS = 16_384  # rows per block of similarities: a block is CHUNK_ROWS x (columns) float32
# A block of neighbour similarities holds at most this many entries: small enough on a CPU to stay in cache (the
# comparison then costs less than the matmul, where a 10k x 4k block made it 3x slower), large on a GPU to fill it.
BLOCK_ENTRIES = {"cpu": 1 << 20, "cuda": 1 << 26}
LEAF_SIZE = 1024  # the scale path's largest cluster, where k-means can still split it
BRANCHING = 16  # children per split of the hierarchy
EXACT_LEAF = 4096  # a leaf up to this size has every pair compared; a larger one (a burst) is sampled
POINTS_PER_CENTROID = 128  # a node's centroids are fitted on at most this many members per child
MERGE_COSINE = 0.98  # sibling centroids at least this close are one mode (a burst k-means cut in pieces)
ITERATIONS = 20
# Radians kept off the threshold's angle before the triangle inequality vouches for a pair: float16 rows are unit
# length to about 1e-3, and at threshold 0.9 this margin keeps every vouched pair's dot product above 0.902.
ANGLE_MARGIN = 0.01


class Ranks:
    """The processes that share a memory: torch.distributed's group where the memory is sharded across it, else
    this process alone (every collective is then the identity)."""

    def __init__(self, sharded: bool = False):
        self.enabled = bool(sharded and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        self.rank = dist.get_rank() if self.enabled else 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.broadcast(tensor, 0)
        return tensor

    def any(self, flag: bool, device) -> bool:
        return bool(self.sum_(torch.tensor([int(flag)], device=device)).item())


@dataclass
class Shard:
    """The rows of unit vectors this rank holds: ``x`` [n, d] and their global ``indices`` [n] (of ``num_samples``),
    with a map back from global index to row (-1: another rank's)."""

    x: torch.Tensor
    indices: torch.Tensor
    num_samples: int
    ranks: Ranks

    def __post_init__(self):
        self.row_of = torch.full((self.num_samples,), -1, dtype=torch.long, device=self.x.device)
        self.row_of[self.indices] = torch.arange(self.indices.numel(), device=self.x.device)
        self.whole = not self.ranks.enabled and self.indices.numel() == self.num_samples

    def rows(self, global_indices: torch.Tensor) -> torch.Tensor:
        """The vectors of ``global_indices``, wherever they are held: gathered from every rank when sharded."""
        local = self.row_of[global_indices]
        if self.whole:
            return self.x[local]
        out = torch.zeros(global_indices.numel(), self.x.shape[1], dtype=self.x.dtype, device=self.x.device)
        mine = local >= 0
        out[mine] = self.x[local[mine]]
        return self.ranks.sum_(out)

    def everyone(self, local_values: torch.Tensor) -> torch.Tensor:
        """A per-row result [n] made into the global [N] vector every rank holds."""
        out = torch.zeros(self.num_samples, dtype=local_values.dtype, device=local_values.device)
        out[self.indices] = local_values
        return self.ranks.sum_(out)


def _compute(t: torch.Tensor) -> torch.Tensor:
    """Matmul operand: half precision stays half on a GPU (fp32 accumulation inside the kernel); the CPU has no
    fast half matmul, so blocks are widened to float32 there."""
    return t.float() if t.device.type == "cpu" else t


def best_centroid(
    x: torch.Tensor, centroids: torch.Tensor, chunk_rows: int = CHUNK_ROWS, rows: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, cosine)`` of each row's most similar centroid (of ``x[rows]`` where given), a block of
    ``chunk_rows`` rows at a time: no more than a block of ``x`` is ever copied."""
    best, similarity = [], []
    c = _compute(centroids).T
    for block in x.split(chunk_rows) if rows is None else rows.split(chunk_rows):
        values, index = (_compute(block if rows is None else x[block]) @ c).max(dim=1)
        best.append(index)
        similarity.append(values.float())
    if not best:
        return torch.zeros(0, dtype=torch.long, device=x.device), torch.zeros(0, device=x.device)
    return torch.cat(best), torch.cat(similarity)


def spherical_kmeans(
    x: torch.Tensor,
    clusters: int,
    generator: torch.Generator,
    iterations: int = ITERATIONS,
    chunk_rows: int = CHUNK_ROWS,
    shard: Optional[Shard] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(assignment [n], centroids [C, d])`` of unit vectors ``x`` by cosine similarity (Lloyd's iterations).
    Starts from ``clusters`` distinct samples drawn from ``generator``; a cluster left empty keeps its centroid.

    With a ``shard`` (``x`` being its rows), it runs as one algorithm over every rank's rows: the starting samples
    are global indices, and each iteration's sums and counts are all-reduced, so every rank holds the same
    centroids and its own rows' assignment."""
    total = x.shape[0] if shard is None else shard.num_samples
    clusters = min(clusters, total)
    start = torch.randperm(total, generator=generator)[:clusters].to(x.device)
    centroids = (x[start] if shard is None else shard.rows(start)).float().clone()
    ranks = shard.ranks if shard is not None else Ranks()
    assignment = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    for _ in range(iterations):
        new = best_centroid(x, centroids, chunk_rows)[0]
        if not ranks.any(not torch.equal(new, assignment), x.device):
            break
        assignment = new
        sums = ranks.sum_(torch.zeros_like(centroids).index_add_(0, assignment, x.float()))
        occupied = ranks.sum_(torch.bincount(assignment, minlength=clusters)) > 0
        centroids[occupied] = F.normalize(sums[occupied], dim=1)
    return assignment, centroids


@dataclass
class Clustering:
    """Every sample's cluster, the same on every rank: ``assignment`` [N] (0 .. count-1), ``similarity`` [N] (its
    cosine to its cluster's centroid) and ``count`` clusters; ``exact`` says which path made it."""

    assignment: torch.Tensor
    similarity: torch.Tensor
    count: int
    exact: bool

    def members(self) -> list[torch.Tensor]:
        """Each cluster's global indices, in ascending order."""
        order = self.assignment.argsort(stable=True)
        return list(order.split(torch.bincount(self.assignment, minlength=self.count).tolist()))


def cluster(
    shard: Shard,
    clusters: int,
    generator: torch.Generator,
    exact_limit: Optional[int] = None,
    leaf_size: int = LEAF_SIZE,
    chunk_rows: int = CHUNK_ROWS,
) -> Clustering:
    """The memory's clustering: the exact path (flat k-means into ``clusters`` groups, default sqrt(N)) up to
    ``exact_limit`` samples, the hierarchical one above (leaves of at most ``leaf_size``, or N / ``clusters``
    where clusters are asked for)."""
    n = shard.num_samples
    if n <= (EXACT_LIMIT if exact_limit is None else exact_limit):
        count = clusters or max(1, round(math.sqrt(n)))
        local, centroids = spherical_kmeans(
            shard.x, count, generator, chunk_rows=chunk_rows, shard=None if shard.whole else shard
        )
        similarity = (_compute(shard.x) * _compute(centroids[local])).sum(dim=1).float()  # as v3's central read it
        return Clustering(shard.everyone(local), shard.everyone(similarity), min(count, n), exact=True)
    leaf = math.ceil(n / clusters) if clusters else leaf_size
    return hierarchical_kmeans(shard, max(2, leaf), generator, chunk_rows=chunk_rows)


def hierarchical_kmeans(
    shard: Shard, leaf_size: int, generator: torch.Generator, branching: int = BRANCHING, chunk_rows: int = CHUNK_ROWS
) -> Clustering:
    """Split every node larger than ``leaf_size`` into at most ``branching`` children, level by level, until
    every node is a leaf: small enough, or one mode that k-means cannot split (its children merged back). A
    level's children are fitted in batches and broadcast once, so the cost per node is a few tensor operations."""
    device = shard.x.device
    node = torch.zeros(shard.num_samples, dtype=torch.long, device=device)  # global, the same on every rank
    next_id, frontier = 1, [0]
    while frontier:
        members = _members_of(node, frontier)
        centroids, children = _fit_children(shard, [members[p] for p in frontier], leaf_size, branching, generator)
        label, groups = _merged(centroids, children)
        groups, label = groups.tolist(), label.tolist()
        local_rows = _members_of(node[shard.indices], frontier)
        moved = torch.zeros(shard.x.shape[0], dtype=torch.long, device=device)
        split = []
        for p, parent in enumerate(frontier):
            if groups[p] < 2:
                continue  # one mode: a leaf, whatever its size
            rows = local_rows[parent]
            child = best_centroid(shard.x, centroids[p, : children[p]], chunk_rows, rows=rows)[0]
            moved[rows] = next_id + torch.tensor(label[p][: children[p]], device=device)[child]
            split.append((next_id, groups[p], int(members[parent].numel())))
            next_id += groups[p]
        moved = shard.everyone(moved)
        node = torch.where(moved > 0, moved, node)
        sizes = torch.bincount(node, minlength=next_id).tolist()
        frontier = [
            first + c
            for first, count, parent_size in split
            for c in range(count)
            if leaf_size < sizes[first + c] < parent_size
        ]
    labels, assignment = torch.unique(node, return_inverse=True)
    return Clustering(
        assignment, _to_mean_direction(shard, assignment, labels.numel(), chunk_rows), labels.numel(), exact=False
    )


def _to_mean_direction(shard: Shard, assignment: torch.Tensor, count: int, chunk_rows: int) -> torch.Tensor:
    """Each sample's cosine [N] to its cluster's mean direction (over every rank's rows): one point per cluster,
    which the neighbour count's triangle inequality needs (a merged leaf's members were assigned to different
    siblings' centroids, and a node never split to none)."""
    local = assignment[shard.indices]
    sums = torch.zeros(count, shard.x.shape[1], device=shard.x.device)
    for rows, cluster_of in zip(shard.x.split(chunk_rows), local.split(chunk_rows)):
        sums.index_add_(0, cluster_of, rows.float())
    centres = F.normalize(shard.ranks.sum_(sums), dim=1)
    cosine = torch.cat(
        [
            (rows.float() * centres[cluster_of]).sum(dim=1)
            for rows, cluster_of in zip(shard.x.split(chunk_rows), local.split(chunk_rows))
        ]
    )
    return shard.everyone(cosine)


def _members_of(node: torch.Tensor, ids: list[int]) -> dict[int, torch.Tensor]:
    """The positions in ``node`` (ascending) that hold each of ``ids``: one sort, not a scan per id."""
    order = node.argsort(stable=True)
    counts = torch.bincount(node, minlength=max(ids) + 1).tolist()
    groups = order.split(counts)
    return {i: groups[i] for i in ids}


def _fit_children(
    shard: Shard, members: list[torch.Tensor], leaf_size: int, branching: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[int]]:
    """``(centroids [P, K, d], children per node)``: each node's child centroids, fitted by batched spherical
    k-means on a sample of its members. Every rank draws the samples and starts alike; rank 0 fits and
    broadcasts, so ranks split alike whatever their arithmetic."""
    children = [min(branching, math.ceil(m.numel() / leaf_size)) for m in members]
    samples = [
        m[torch.randperm(m.numel(), generator=generator)[: k * POINTS_PER_CENTROID].to(m.device)]
        for m, k in zip(members, children)
    ]
    starts = [torch.randperm(s.numel(), generator=generator)[:k] for s, k in zip(samples, children)]
    d = shard.x.shape[1]
    centroids = torch.zeros(len(members), max(children), d, device=shard.x.device)
    order = sorted(range(len(members)), key=lambda p: samples[p].numel())  # batches of alike sizes pad little
    budget = BLOCK_ENTRIES["cuda" if shard.x.is_cuda else "cpu"]  # entries of a batch's padded points
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * samples[order[stop]].numel() * d <= budget:
            stop += 1
        batch = order[start:stop]
        rows = F.normalize(shard.rows(torch.cat([samples[p] for p in batch])).float(), dim=1)
        if shard.ranks.rank == 0:
            points = rows.split([samples[p].numel() for p in batch])
            fitted = _batched_kmeans(points, [starts[p] for p in batch])
            centroids[torch.tensor(batch, device=centroids.device), : fitted.shape[1]] = fitted
        start = stop
    return shard.ranks.broadcast_(centroids), children


def _batched_kmeans(
    points: list[torch.Tensor], starts: list[torch.Tensor], iterations: int = ITERATIONS
) -> torch.Tensor:
    """Spherical k-means of several small sets at once: ``points[b]`` [s_b, d] from centroids
    ``points[b][starts[b]]``; returns [B, K, d] (K the most centroids asked, zero past a set's own)."""
    b, d = len(points), points[0].shape[1]
    width = max(s.numel() for s in starts)
    x = torch.nn.utils.rnn.pad_sequence(points, batch_first=True)  # [B, S, d], zero rows past each set's end
    real = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(p.shape[0], dtype=torch.bool, device=x.device) for p in points], batch_first=True
    )
    k = torch.tensor([s.numel() for s in starts], device=x.device)
    live = torch.arange(width, device=x.device).unsqueeze(0) < k.unsqueeze(1)  # [B, K]
    centroids = torch.zeros(b, width, d, device=x.device)
    for i, (p, s) in enumerate(zip(points, starts)):
        centroids[i, : s.numel()] = p[s.to(x.device)]
    assignment = None
    flat_points, offset = x[real], (torch.arange(b, device=x.device) * width).unsqueeze(1)
    for _ in range(iterations):  # a set at its fixed point stays there while the others move
        new = (x @ centroids.transpose(1, 2)).masked_fill_(~live.unsqueeze(1), -math.inf).argmax(dim=2)
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        slot = (assignment + offset)[real]
        sums = torch.zeros(b * width, d, device=x.device).index_add_(0, slot, flat_points)
        occupied = torch.bincount(slot, minlength=b * width) > 0
        flat = centroids.view(b * width, d)
        flat[occupied] = F.normalize(sums[occupied], dim=1)
    return centroids


def _merged(centroids: torch.Tensor, children: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(label [P, K], groups [P])``: centroids of one node linked by cosine at least MERGE_COSINE share a
    label (0 .. groups-1, numbered by their first centroid; -1 past the node's own centroids)."""
    p, k = centroids.shape[:2]
    live = torch.arange(k, device=centroids.device) < torch.tensor(children, device=centroids.device).unsqueeze(1)
    close = (centroids @ centroids.transpose(1, 2) >= MERGE_COSINE) & live.unsqueeze(1) & live.unsqueeze(2)
    group = torch.arange(k, device=centroids.device).expand(p, k).clone()
    for _ in range(k):  # label propagation to the smallest linked index
        new = torch.where(close, group.unsqueeze(1), k).min(dim=2).values
        new = torch.where(live, new, k)
        if torch.equal(new, group):
            break
        group = new
    root = (group == torch.arange(k, device=centroids.device)) & live
    rank = root.long().cumsum(dim=1) - 1
    label = torch.where(live, rank.gather(1, group.clamp(max=k - 1)), -1)
    return label, root.sum(dim=1)


def neighbour_counts(
    shard: Shard,
    clustering: Clustering,
    threshold: float,
    generator: torch.Generator,
    exact_leaf: Optional[int] = EXACT_LEAF,
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """For each sample, how many members of its cluster (itself included) have cosine similarity at least
    ``threshold`` with it: 1 for a sample with no near-copy, about m for one of a burst of m near-copies. Returns
    the global [N] counts (int64) on every rank.

    The exact path compares every pair inside a cluster, as v3 did. The scale path never builds a cluster's
    square. A cluster's *core*, the members within half the threshold's angle of its centroid (less a margin for
    half-precision rounding), are near each other by the triangle inequality on the sphere: a core member is
    compared only with the rest of the cluster, and a burst of near-copies, whatever its size, costs little.
    Comparisons against more than ``exact_leaf`` members (None: never) use a uniform sample of ``exact_leaf`` of
    them, the count scaled to the whole."""
    counts = torch.ones(shard.x.shape[0], dtype=torch.long, device=shard.x.device)
    local_cluster = clustering.assignment[shard.indices]
    local_order = local_cluster.argsort(stable=True)
    local_rows = local_order.split(torch.bincount(local_cluster, minlength=clustering.count).tolist())
    core_of = None
    if not clustering.exact:
        core_of = torch.arccos(clustering.similarity.clamp(-1.0, 1.0)) <= (math.acos(threshold) - ANGLE_MARGIN) / 2
    for members, rows in zip(clustering.members(), local_rows):
        if members.numel() < 2:
            continue
        if core_of is None:
            counts[rows] = _near(shard, rows, members, threshold, generator, None, chunk_rows)
            continue
        core = core_of[members]
        rest, in_core = members[~core], core_of[shard.indices[rows]]
        if rest.numel() < members.numel():  # the same on every rank: decided from global values
            counts[rows[in_core]] = int(core.sum()) + _near(
                shard, rows[in_core], rest, threshold, generator, exact_leaf, chunk_rows
            )
        counts[rows[~in_core]] = _near(shard, rows[~in_core], members, threshold, generator, exact_leaf, chunk_rows)
    return shard.everyone(counts)


def _near(
    shard: Shard,
    rows: torch.Tensor,
    pool: torch.Tensor,
    threshold: float,
    generator: torch.Generator,
    exact_leaf: Optional[int],
    chunk_rows: int,
) -> torch.Tensor:
    """How many of ``pool`` (global indices, ascending) each of this rank's ``rows`` is near (a row in the pool
    counts itself): against every member of the pool, or against a uniform sample of ``exact_leaf`` and scaled.
    Collective where sharded: every rank calls it for the same pools, with or without rows of its own."""
    if pool.numel() == 0:
        return torch.zeros(rows.numel(), dtype=torch.long, device=rows.device)
    sampled = exact_leaf is not None and pool.numel() > exact_leaf
    reference = (
        pool[torch.randperm(pool.numel(), generator=generator)[:exact_leaf].to(pool.device)] if sampled else pool
    )
    ref = _compute(shard.rows(reference)).T
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=rows.device)
    step = min(chunk_rows, max(64, BLOCK_ENTRIES.get(ref.device.type, 1 << 24) // ref.shape[1]))
    hits = torch.cat(
        [(_compute(shard.x[block]) @ ref >= threshold).sum(dim=1, dtype=torch.int32) for block in rows.split(step)]
    ).long()
    if not sampled:
        return hits
    member = torch.zeros(shard.num_samples, dtype=torch.bool, device=pool.device)
    member[pool] = True
    in_pool = member[shard.indices[rows]].long()
    member.zero_()[reference] = True
    in_reference = member[shard.indices[rows]].long()  # a sampled row finds itself among the hits
    others = (hits - in_reference).double() / (reference.numel() - in_reference).double()
    return in_pool + (others * (pool.numel() - in_pool)).round().long()


def plan_digest(indices: torch.Tensor, weights: Optional[torch.Tensor] = None) -> int:
    """A 63-bit fingerprint of a plan (its indices in order, and its weights to 1e-6): ranks that planned alike
    have the same one."""
    position = torch.arange(1, indices.numel() + 1, dtype=torch.long)
    digest = int(((indices.long().cpu() + 1) * (2 * position + 1)).sum())
    if weights is not None:
        digest += int(((weights.double().cpu() * 1e6).round().long() * (position * 7 + 3)).sum())
    return digest & (2**63 - 1)
