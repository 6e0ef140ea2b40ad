"""What a pool of images holds, without labels, from one embedding pass: copies (exact, by their pixels; near, by
their embeddings), how uneven its clusters are, its outliers, and how many distinct images it amounts to; and the
static weights that de-duplicate and balance it, which ``pruning.selector=prior`` reads. Torch only, on whatever
device the embeddings are; the audit command (``ssl_emp.audit``) runs it on a folder and reports.

Every threshold here is relative to the pool itself, so that it means the same on any data and any backbone:

- two samples are **near-copies** when their cosine distance is at most ``NEAR_COPY_RATIO`` of the typical
  distance between two samples of the pool (the median over random pairs): a copy's distance is small against
  the spread of the pool, whatever the embedding's width or how spread it is;
- an **outlier** is a sample nearer to its cluster's centre as an unrelated sample would be (the median cosine of
  random pairs) than as a typical member is (the median member's cosine to its centre), or a member of a cluster
  the coverage selector's junk guard flags (:func:`ssl_emp.pruning.selectors.coverage.guarded`: a cluster of one,
  or a loose one);
- how **uneven** the pool is is read from a coarse clustering, ``N ** (1/3)`` clusters (10 for a thousand images,
  100 for a million): near the number of modes a pool has, where the selector's finer ``sqrt(N)`` clusters cut a
  large mode into many pieces of ordinary size and so hide a long tail.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ssl_emp.pruning.clustering import Ranks, Shard, cluster
from ssl_emp.pruning.selectors.coverage import guarded

# A near-copy's distance, as a fraction of the pool's median distance between random pairs. Chosen on the
# Fashion-MNIST family (benchmarks/audit_calibration.py): clean pools' nearest neighbours lie at 0.003 to 0.05 of
# it, so 0.002 flags 0.2% of a clean long tail and every copy of dups90 (docs/auditing.md).
NEAR_COPY_RATIO = 0.002
RANDOM_PAIRS = 20_000  # random pairs the pool's typical distance is the median of
# The recommendation's rule (``recommend``). A pool where at least this share of the images repeat another is
# de-duplicated first: v3 measured its largest gain on 90% exact copies, where a static de-duplication does as well.
COPY_SHARE_FOR_DEDUP = 0.10
COARSE_RESTARTS = 3  # the coarse k-means keeps its tightest of this many starts: a merged pair of modes misreads


def _union(labels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Connected components of the graph with edges ``a[k] - b[k]``: every node labelled with its component's
    smallest index (label propagation, at most log-depth rounds on these graphs)."""
    while True:
        low = torch.minimum(labels[a], labels[b])
        new = labels.clone().scatter_reduce_(0, a, low, "amin").scatter_reduce_(0, b, low, "amin")
        new = new[new]  # jump to the label's own label: components collapse fast
        if torch.equal(new, labels):
            return labels
        labels = new


def exact_copy_groups(images: torch.Tensor) -> torch.Tensor:
    """[N] group ids (each group's smallest index) of images whose pixels are identical, by a hash of their bytes."""
    first: dict[bytes, int] = {}
    groups = torch.empty(len(images), dtype=torch.long)
    for i, image in enumerate(images.cpu()):
        digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()
        groups[i] = first.setdefault(digest, i)
    return groups


def typical_distance(features: torch.Tensor, generator: torch.Generator, pairs: int = RANDOM_PAIRS) -> float:
    """The median cosine distance between two random samples of the pool (``features``: unit rows)."""
    n = len(features)
    a = torch.randint(n, (pairs,), generator=generator).to(features.device)
    b = torch.randint(n - 1, (pairs,), generator=generator).to(features.device)
    b = b + (b >= a)  # never a sample with itself
    return float((1 - (features[a] * features[b]).sum(dim=1)).median())


def near_copy_groups(
    features: torch.Tensor, assignment: torch.Tensor, count: int, threshold: float, block: int = 2048
) -> torch.Tensor:
    """[N] group ids of samples within cosine distance ``threshold`` of another, chained (a - b - c is one group).
    Pairs are compared inside each cluster only (``assignment`` of ``count``): near-copies share a cluster, and no
    N x N matrix is built."""
    labels = torch.arange(len(features), device=features.device)
    order = assignment.argsort(stable=True)
    for members in order.split(torch.bincount(assignment, minlength=count).tolist()):
        if len(members) < 2:
            continue
        x = features[members]
        for start in range(0, len(members), block):
            sims = x[start : start + block] @ x.T
            rows, cols = torch.nonzero(sims >= 1 - threshold, as_tuple=True)
            keep = cols > rows + start  # each pair once, never a sample with itself
            if bool(keep.any()):  # joined block by block: a burst's pairs are never all held at once
                labels = _union(labels, members[rows[keep] + start], members[cols[keep]])
    return labels


def _coarse(features: torch.Tensor, count: int, generator: torch.Generator, iterations: int = 30) -> torch.Tensor:
    """The coarse clustering's assignment: spherical k-means from k-means++ starts (each next centre drawn with
    probability growing as the square of its distance to the nearest chosen one), the tightest of a few starts.
    k-means++ seeds every well-separated mode where random starts often seed two in one and merge two others."""
    n = len(features)
    best, best_fit = None, -2.0
    for _ in range(COARSE_RESTARTS):
        chosen = [int(torch.randint(n, (1,), generator=generator))]
        nearest = 1 - features @ features[chosen[0]]
        for _ in range(1, min(count, n)):
            weights = nearest.clamp_min(0).double().square().cpu()
            pick = int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0 else chosen[-1]
            chosen.append(pick)
            nearest = torch.minimum(nearest, 1 - features @ features[pick])
        centroids = features[chosen].clone()
        for _ in range(iterations):
            assignment = (features @ centroids.T).argmax(dim=1)
            sums = torch.zeros_like(centroids).index_add_(0, assignment, features)
            occupied = torch.bincount(assignment, minlength=len(centroids)) > 0
            centroids[occupied] = F.normalize(sums[occupied], dim=1)
        fit = float((features * centroids[assignment]).sum(dim=1).mean())
        if fit > best_fit:
            best, best_fit = assignment, fit
    return best


@dataclass
class Audit:
    """What :func:`audit` measured (shares are of the pool's ``num_samples``)."""

    num_samples: int
    exact_copy_share: float  # images whose pixels repeat an earlier image's
    near_copy_share: float  # images that repeat another (exact or near, by embedding) beyond its group's first
    copy_groups: int  # groups of two or more images that copy each other
    clusters: int  # the fine clustering's (copies, outliers, weights); unevenness is read from a coarse one
    coarse_clusters: int
    top_cluster_share: float  # of the images, in the largest tenth (rounded up) of the coarse clusters
    effective_clusters: float  # exp(entropy of the cluster shares): clusters of equal size that would be as even
    outlier_share: float  # far from their cluster's centre, or in clusters the junk guard flags
    effective_size: int  # distinct images: one per copy group
    typical_distance: float  # the pool's median cosine distance between random pairs
    recommendation: str  # "random" or "deduplicate"
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AuditParts:
    """The per-sample results behind an :class:`Audit`, for its pictures and its weights."""

    copy_group: torch.Tensor  # [N] each sample's copy group (its smallest index; itself where it has no copy)
    assignment: torch.Tensor  # [N] cluster
    outlier: torch.Tensor  # [N] bool
    count: int


def recommend(copy_share: float) -> tuple[str, str]:
    """The benchmark's rule, as a choice and its reason in words. It never says ``coverage``: the audit's
    unevenness figure did not tell a long tail from clean data in calibration (docs/auditing.md), and ``coverage``
    has not beaten ``random`` on data it was not tuned on (benchmark v3's folders; benchmark v4, Holm-adjusted)."""
    if copy_share >= COPY_SHARE_FOR_DEDUP:
        return "deduplicate", (
            f"{copy_share:.0%} of the images repeat another (at least {COPY_SHARE_FOR_DEDUP:.0%}): de-duplicate "
            "first (ssl-emp-audit --write-weights, then pruning.selector=prior), then prune the rest at random"
        )
    return "random", (
        f"few copies ({copy_share:.0%}, under {COPY_SHARE_FOR_DEDUP:.0%}): no selector has beaten random on data "
        "it was not tuned on; prune at pruning.selector=random"
    )


def audit(
    features: torch.Tensor,
    images: Optional[torch.Tensor] = None,
    clusters: Optional[int] = None,
    seed: int = 0,
    near_copy_ratio: float = NEAR_COPY_RATIO,
) -> tuple[Audit, AuditParts]:
    """Audit a pool from its embeddings (``features`` [N, d], any scale) and, where given, its uint8 ``images``
    (for exact copies). ``clusters``: the k-means count (default sqrt(N), as the coverage selector clusters)."""
    features = F.normalize(features.float(), dim=1)
    n = len(features)
    generator = torch.Generator().manual_seed(seed)
    shard = Shard(features, torch.arange(n, device=features.device), n, Ranks())
    made = cluster(shard, clusters or 0, generator)
    coarse_count = max(2, round(n ** (1 / 3)))
    coarse = _coarse(features, coarse_count, generator)
    spread = typical_distance(features, generator)
    exact = (exact_copy_groups(images) if images is not None else torch.arange(n)).to(features.device)
    # Exact copies are searched once, through their group's first image: a folder of a thousand blank frames
    # holds half a million pairs, none of them worth comparing.
    firsts = (exact == torch.arange(n, device=features.device)).nonzero().squeeze(1)
    near_firsts = firsts[
        near_copy_groups(features[firsts], made.assignment[firsts], made.count, near_copy_ratio * spread)
    ]
    near = near_firsts[torch.searchsorted(firsts, exact)]  # each image's group's first, then its near group
    everyone = torch.arange(n, device=features.device)
    groups = _union(everyone, torch.cat([everyone, everyone]), torch.cat([exact, near]))
    group_sizes = torch.bincount(groups, minlength=n)
    distinct = int((group_sizes > 0).sum())
    sizes = torch.bincount(coarse, minlength=coarse_count).double()
    shares = sizes[sizes > 0] / n
    top = max(1, math.ceil(0.1 * len(shares)))
    top_share = float(shares.sort(descending=True).values[:top].sum())
    effective = float(torch.exp(-(shares * shares.log()).sum()))
    unrelated = 1 - spread
    loose = made.similarity < (made.similarity.median() + unrelated) / 2
    outlier = guarded(made.assignment, made.similarity, made.count) | loose
    copy_share = (n - distinct) / n
    choice, why = recommend(copy_share)
    found = Audit(
        num_samples=n,
        exact_copy_share=(n - len(exact.unique())) / n,
        near_copy_share=copy_share,
        copy_groups=int((group_sizes > 1).sum()),
        clusters=made.count,
        coarse_clusters=coarse_count,
        top_cluster_share=top_share,
        effective_clusters=effective,
        outlier_share=float(outlier.double().mean()),
        effective_size=distinct,
        typical_distance=spread,
        recommendation=choice,
        why=why,
    )
    return found, AuditParts(groups, made.assignment, outlier, made.count)


def curation_weights(parts: AuditParts, balance: float = 0.5) -> torch.Tensor:
    """[N] weights for ``pruning.selector=prior``: each copy group weighs as one image (its members share it), and
    each cluster's total grows as ``size ** balance`` (1: as many as it holds, random's share; 0: every cluster
    alike), an outlier's at most its random share. Scaled to a mean of 1 before outliers are capped (so at most
    1 after)."""
    n = len(parts.copy_group)
    group_sizes = torch.bincount(parts.copy_group, minlength=n).double()
    weights = 1.0 / group_sizes[parts.copy_group]
    cluster_mass = torch.zeros(parts.count, dtype=torch.float64).index_add_(0, parts.assignment, weights)
    cluster_total = cluster_mass.clamp_min(1e-12) ** balance
    weights = weights * (cluster_total / cluster_mass.clamp_min(1e-12))[parts.assignment]
    weights = weights / weights.mean()
    return torch.where(parts.outlier, weights.clamp(max=1.0), weights)
