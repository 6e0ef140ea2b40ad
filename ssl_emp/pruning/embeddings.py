"""Where each sample sits: an embedding memory of clean (un-augmented) images, and what coverage selectors read
from it: spherical k-means groups, and each sample's near neighbours inside its group
(:mod:`ssl_emp.pruning.clustering` computes both, at any N).

The training loop fills the memory (``Pruner.set_embeddings``) when ``Pruner.needs_embeddings(epoch)`` asks:
once after the warm-up, and every ``embed_every`` epochs after that where set. Those forwards are compute the
run spends beyond training, and the pruner counts them (``embedding_forwards``). Clean images, not the training
views, because two augmented views of one image sit further apart than two near-copies of it; a density read
from the views finds mostly the augmentation (the prototype of the science issue measured it).

Neighbours are searched inside k-means clusters, as SemDeDup does (Abbas et al., 2023): the pairwise
similarities of a cluster's members instead of all N².
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from ssl_emp.pruning import clustering as engine
from ssl_emp.pruning.clustering import Clustering, Ranks, Shard

CENTRE_CHUNK = 1 << 16  # rows centred and normalised at a time on the scale path


class EmbeddingMemory:
    """One vector per sample and the epoch it was refreshed, on ``device``, and what selection reads from it,
    computed once per refresh: the clustering and each threshold's neighbour counts.

    The table is float32 where the exact path runs (N at most ``clustering.EXACT_LIMIT``: v3's arithmetic, bit for
    bit) and float16 above (half the bytes; ``dtype`` overrides); ``exact_limit`` moves the boundary. Under
    torch.distributed the training loop stores each rank's own rows (``store(..., shard=True)``): the memory is
    then sharded, and the computations run across the ranks. A checkpoint keeps what was computed (a few numbers
    per sample, the same on every rank), not the table, so resuming plans exactly as the first run did without any
    rank's rows."""

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        device: Union[torch.device, str] = "cpu",
        dtype: Optional[torch.dtype] = None,
        exact_limit: Optional[int] = None,
    ):
        self.num_samples = num_samples
        self.seed = seed
        self.device = torch.device(device)
        self.exact_limit = engine.EXACT_LIMIT if exact_limit is None else exact_limit
        self._dtype = dtype
        self.vectors: Optional[torch.Tensor] = None  # [N, d], or this rank's rows where sharded
        self.owned: Optional[torch.Tensor] = None  # the global indices of a shard's rows; None: all N
        self.filled = torch.zeros(num_samples, dtype=torch.bool)
        self.epoch = -1  # the epoch whose plan the latest refresh was made for
        self.forwards = 0  # clean forwards spent filling it, over the whole run (all ranks')
        self._clustering: Optional[tuple[int, Clustering]] = None  # (count asked, clustering) of this refresh
        self._counts: dict[float, torch.Tensor] = {}  # threshold -> neighbour counts [N], of this refresh
        self._normalised: Optional[Shard] = None  # the centred unit rows of this refresh: a copy of the table

    @property
    def ready(self) -> bool:
        return self.owned is not None or bool(self.filled.all()) or self._clustering is not None

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype or (torch.float32 if self.num_samples <= self.exact_limit else torch.float16)

    @property
    def sharded(self) -> bool:
        return self.owned is not None

    def store(self, indices: torch.Tensor, vectors: torch.Tensor, epoch: int, shard: bool = False) -> None:
        """Keep ``vectors`` [B, d] of the samples at ``indices``. ``shard=True``: these are this rank's rows of a
        refresh that the ranks' shards cover together, each sample once (a zero vector for one that could not be
        read); the rows replace the rank's previous ones."""
        indices = indices.detach().to(self.device).long()
        vectors = vectors.detach().to(self.device, self.dtype)
        if shard:
            order = indices.argsort()
            self.owned, self.vectors = indices[order], vectors[order].contiguous()
            self.forwards += self.num_samples
        else:
            if self.vectors is None or self.owned is not None or self.vectors.shape[1] != vectors.shape[1]:
                self.vectors = torch.zeros(self.num_samples, vectors.shape[1], dtype=self.dtype, device=self.device)
                self.owned = None
            self.vectors[indices] = vectors
            self.filled[indices.cpu()] = True
            self.forwards += indices.numel()
        self.epoch = epoch
        self._clustering, self._counts, self._normalised = None, {}, None

    def _shard(self) -> Shard:
        """The vectors centred on their mean (over every rank's rows) and scaled to unit length: cosine similarity
        is then a dot product, and the direction all features share (a ReLU network's are all positive) no longer
        makes everything look alike. Made once per refresh."""
        if self._normalised is None:
            self._normalised = self._normalise()
        return self._normalised

    def _normalise(self) -> Shard:
        if self.vectors is None:
            raise ValueError(
                "the embedding memory was restored from a checkpoint without its vectors and asked for "
                "a clustering it did not save: refresh it (set_embeddings) first"
            )
        ranks = Ranks(self.sharded)
        indices = self.owned if self.sharded else torch.arange(self.num_samples, device=self.device)
        if not self.sharded and self.dtype == torch.float32 and self.num_samples <= self.exact_limit:
            x = F.normalize(self.vectors - self.vectors.mean(dim=0, keepdim=True), dim=1)  # v3's arithmetic
            return Shard(x, indices, self.num_samples, ranks)
        total = torch.zeros(self.vectors.shape[1], dtype=torch.float64, device=self.device)
        for block in self.vectors.split(CENTRE_CHUNK):
            total += block.float().sum(dim=0).double()
        mean = (ranks.sum_(total) / self.num_samples).float()
        # A shard is replaced whole by the next refresh, so it is normalised in place; an unsharded table may be
        # refreshed a batch at a time, so it keeps its raw rows and the unit rows are a copy.
        x = self.vectors if self.sharded else torch.empty_like(self.vectors)
        for block, out in zip(self.vectors.split(CENTRE_CHUNK), x.split(CENTRE_CHUNK)):
            out.copy_(F.normalize(block.float() - mean, dim=1))
        return Shard(x, indices, self.num_samples, ranks)

    def clusters(self, count: Optional[int] = None) -> Clustering:
        """The spherical k-means clustering of the memory into ``count`` groups (0 or None: sqrt(N) on the exact
        path, leaves of ``clustering.LEAF_SIZE`` above), the same on every rank. Computed once per refresh, which
        every pruned epoch until the next refresh plans from."""
        count = count or 0
        if self._clustering is None or self._clustering[0] != count:
            self._clustering = (count, engine.cluster(self._shard(), count, self.generator(), self.exact_limit))
            self._counts = {}
        return self._clustering[1]

    def computed(
        self, threshold: float, count: Optional[int] = None
    ) -> tuple[Optional[Clustering], Optional[torch.Tensor]]:
        """The clustering and the neighbour counts this refresh has already computed (None for each not yet):
        what a report may read without clustering again (a collective, costly at scale, and impossible for a
        memory restored without its vectors)."""
        clustering = (
            self._clustering[1] if self._clustering is not None and self._clustering[0] == (count or 0) else None
        )
        return clustering, (self._counts.get(threshold) if clustering is not None else None)

    def neighbour_counts(self, threshold: float, count: Optional[int] = None) -> torch.Tensor:
        """Each sample's near neighbours in its cluster at cosine ``threshold``, itself included ([N] int64)."""
        clustering = self.clusters(count)
        if threshold not in self._counts:
            generator = torch.Generator().manual_seed(self.generator().initial_seed() + 1)
            self._counts[threshold] = engine.neighbour_counts(self._shard(), clustering, threshold, generator)
        return self._counts[threshold]

    def generator(self) -> torch.Generator:
        """Seeded by the run's seed and the refresh, so a resumed run clusters exactly as the first one did."""
        return torch.Generator().manual_seed(self.seed * 100_003 + 7919 * (self.epoch + 1))

    def state_dict(self) -> dict:
        state = {
            "epoch": self.epoch,
            "forwards": self.forwards,
            "counts": {k: v.cpu() for k, v in self._counts.items()},
        }
        if self._clustering is not None:
            asked, c = self._clustering
            state["clustering"] = {
                "asked": asked,
                "assignment": c.assignment.cpu(),
                "similarity": c.similarity.cpu(),
                "count": c.count,
                "exact": c.exact,
            }
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.forwards = state.get("epoch", -1), state.get("forwards", 0)
        self._clustering, self._counts, self._normalised = None, {}, None
        if state.get("vectors") is not None:  # a checkpoint of v3's format: the table itself
            self.vectors = state["vectors"].to(self.device, self.dtype)
            self.owned = None
            self.filled = state.get("filled", torch.ones(self.num_samples, dtype=torch.bool)).cpu()
        if "clustering" in state:
            c = state["clustering"]
            clustering = Clustering(
                c["assignment"].to(self.device), c["similarity"].to(self.device), c["count"], c["exact"]
            )
            self._clustering = (c["asked"], clustering)
            self._counts = {k: v.to(self.device) for k, v in state.get("counts", {}).items()}


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
