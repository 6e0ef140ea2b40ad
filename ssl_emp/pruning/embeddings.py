"""Where each sample sits: an embedding memory of clean (un-augmented) images, and what coverage selectors read
from it: spherical k-means groups, and each sample's near neighbours inside its group.

The training loop fills the memory (``Pruner.set_embeddings``) when ``Pruner.needs_embeddings(epoch)`` asks:
once after the warm-up, and every ``embed_every`` epochs after that where set. Those forwards are compute the
run spends beyond training, and the pruner counts them (``embedding_forwards``). Clean images, not the training
views, because two augmented views of one image sit further apart than two near-copies of it; a density read
from the views finds mostly the augmentation (the prototype of the science issue measured it).

Neighbours are searched inside k-means clusters, as SemDeDup does (Abbas et al., 2023): the pairwise
similarities of a cluster's members instead of all N², so the cost is about ``N² / clusters``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


class EmbeddingMemory:
    """One vector per sample (float32 [N, d], on the CPU, where selection runs) and the epoch it was refreshed."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed
        self.vectors: Optional[torch.Tensor] = None
        self.filled = torch.zeros(num_samples, dtype=torch.bool)
        self.epoch = -1  # the epoch whose plan the latest refresh was made for
        self.forwards = 0  # clean forwards spent filling it, over the whole run
        self._clustering: Optional[tuple] = None  # (count asked, (x, assignment, centroids)) of the current vectors

    @property
    def ready(self) -> bool:
        return bool(self.filled.all())

    def store(self, indices: torch.Tensor, vectors: torch.Tensor, epoch: int) -> None:
        indices, vectors = indices.detach().cpu().long(), vectors.detach().float().cpu()
        if self.vectors is None or self.vectors.shape[1] != vectors.shape[1]:
            self.vectors = torch.zeros(self.num_samples, vectors.shape[1])
        self.vectors[indices] = vectors
        self.filled[indices] = True
        self.epoch = epoch
        self.forwards += indices.numel()
        self._clustering = None

    def mark_missing(self, indices: torch.Tensor, epoch: int) -> None:
        """Samples whose image could not be read (a streamed folder's unreadable files): a zero vector each. They
        all look alike, so coverage draws them rarely, which suits samples that cannot be trained anyway."""
        if self.vectors is not None and indices.numel():
            self.vectors[indices.cpu().long()] = 0.0
            self.filled[indices.cpu().long()] = True
            self.epoch = epoch
            self._clustering = None

    def normalised(self) -> torch.Tensor:
        """The vectors centred on their mean and scaled to unit length: cosine similarity is then a dot product,
        and the direction all features share (a ReLU network's are all positive) no longer makes everything
        look alike."""
        centred = self.vectors - self.vectors.mean(dim=0, keepdim=True)
        return F.normalize(centred, dim=1)

    def clusters(self, count: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, assignment, centroids)``: the :meth:`normalised` vectors and their spherical k-means clustering into
        ``count`` groups (default :func:`default_clusters`). Computed once per refresh of the memory, which every
        pruned epoch until the next refresh plans from."""
        if self._clustering is None or self._clustering[0] != count:
            x = self.normalised()
            assignment, centroids = spherical_kmeans(x, count or default_clusters(x.shape[0]), self.generator())
            self._clustering = (count, (x, assignment, centroids))
        return self._clustering[1]

    def generator(self) -> torch.Generator:
        """Seeded by the run's seed and the refresh, so a resumed run clusters exactly as the first one did."""
        return torch.Generator().manual_seed(self.seed * 100_003 + 7919 * (self.epoch + 1))

    def state_dict(self) -> dict:
        return {"vectors": self.vectors, "filled": self.filled, "epoch": self.epoch, "forwards": self.forwards}

    def load_state_dict(self, state: dict) -> None:
        if state.get("vectors") is not None:
            self.vectors = state["vectors"].float().cpu()
        self.filled = state.get("filled", self.filled).cpu()
        self.epoch, self.forwards = state.get("epoch", -1), state.get("forwards", 0)
        self._clustering = None


def default_clusters(num_samples: int) -> int:
    """sqrt(N) clusters: neighbour search then costs about N^1.5 similarities, and a cluster holds about sqrt(N)
    samples, room for a burst of near-copies without splitting it."""
    return max(1, round(math.sqrt(num_samples)))


def spherical_kmeans(x: torch.Tensor, clusters: int, generator: torch.Generator,
                     iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """``(assignment [N], centroids [C, d])`` of unit vectors ``x`` by cosine similarity. Starts from ``clusters``
    distinct samples drawn from ``generator``; a cluster left empty keeps its centroid."""
    clusters = min(clusters, x.shape[0])
    centroids = x[torch.randperm(x.shape[0], generator=generator)[:clusters]].clone()
    assignment = torch.full((x.shape[0],), -1, dtype=torch.long)
    for _ in range(iterations):
        new = (x @ centroids.T).argmax(dim=1)
        if torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        occupied = torch.bincount(assignment, minlength=clusters) > 0
        centroids[occupied] = F.normalize(sums[occupied], dim=1)
    return assignment, centroids


def neighbour_counts(x: torch.Tensor, assignment: torch.Tensor, threshold: float) -> torch.Tensor:
    """For each unit vector, how many members of its cluster (itself included) have cosine similarity at least
    ``threshold`` with it: 1 for a sample with no near-copy, about m for one of a burst of m near-copies."""
    counts = torch.ones(x.shape[0], dtype=torch.long)
    order = assignment.argsort(stable=True)
    sizes = torch.bincount(assignment).tolist()
    for members in order.split(sizes):
        if members.numel() > 1:
            block = x[members]
            counts[members] = (block @ block.T >= threshold).sum(dim=1)
    return counts


def target_rates(weights: torch.Tensor, total: int, caps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Shares proportional to ``weights`` where below their caps (default 1: one visit per epoch), summing to
    ``total`` (or to the caps of the positive weights, where that is less): water-filling, the excess of capped
    entries going to the rest in proportion."""
    weights = weights.double().clamp_min(0.0)
    caps = torch.ones_like(weights) if caps is None else caps.double()
    shares = torch.zeros_like(weights)
    capped = torch.zeros_like(weights, dtype=torch.bool)
    positive = weights > 0
    for _ in range(weights.numel() + 1):
        free = positive & ~capped
        room = total - float(caps[capped].sum())
        mass = weights[free].sum()
        if room <= 0 or mass <= 0:
            break
        shares[free] = weights[free] * (room / mass)
        over = free & (shares >= caps)
        if not bool(over.any()):
            break
        capped |= over
        shares[capped] = caps[capped]
    return shares


def draw_by_credit(rates: torch.Tensor, credit: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """``keep`` samples drawn so that each one's visits follow its rate: every sample earns its rate as credit each
    epoch, the ``keep`` with the most credit are drawn (ties at random) and pay 1 each. Equal rates give RS2 (every
    sample once before any twice); a sample's visits stay within about one of its rate times the epochs, and it
    waits about ``1 / rate`` epochs between visits. ``credit`` is updated in place; it should start at a random
    offset in [-1, 0) per sample, so that samples of tiny rate do not all come up at once."""
    credit += rates
    shuffle = torch.randperm(credit.numel(), generator=generator)
    chosen = shuffle[credit[shuffle].topk(keep).indices]
    credit[chosen] -= 1.0
    return chosen
