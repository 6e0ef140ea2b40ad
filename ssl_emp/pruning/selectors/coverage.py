"""``coverage``: spread the budget over the data's modes instead of its copies, by a density read from an
embedding memory of clean images (centred and normalised), in one of two forms:

- ``coverage_density=cluster``: each spherical k-means cluster of the memory gets a share of the budget that grows
  as ``size ** coverage_balance`` (1: its size, ``random``'s expectation; 0: equal shares, as in the balanced
  curation of Vo et al. 2024), spread evenly over its members. It names no cosine: k-means on normalised vectors
  gives the same clusters when the features are scaled, rotated or embedded in more dimensions, so the rates mean
  the same on any data and any backbone.
- ``coverage_density=threshold`` (v3): a sample's target rate falls as ``neighbours ** -coverage_power``, where its
  neighbours are the members of its cluster within cosine ``coverage_threshold`` (SemDeDup's search). The cosine
  is absolute, so what it counts depends on the feature dimension and spread.

Two guards apply to either form:

- ``coverage_guard``: an outlier is not a rare mode. A cluster of one, or one whose members are loose (their
  cohesion nearer that of unrelated points than the pool's typical, :func:`guarded`), is capped at ``random``'s
  rate: isolated points and noise lumped together by k-means get no more than their ``random`` share, while a
  rare but coherent mode keeps its lift.
- ``floor``: every sample keeps at least ``floor`` times ``random``'s rate (the rates are a mixture of ``floor``
  parts ``random`` and the rest coverage's), so a plan cannot collapse onto a fixed subset. Each pruned epoch
  logs the plan's effective sample size (``effective_sample_share``, 1 / sum p^2 over N).

Draws follow the rates by credit (:mod:`~ssl_emp.pruning.selectors.target_rates`). The memory is refreshed after
the warm-up and every ``embed_every`` epochs (0: never again); each refresh costs a forward of every sample's clean
image, which the run reports (``pruning/embedding_forwards``).
"""

from __future__ import annotations

import torch

from ssl_emp.pruning.embeddings import target_rates
from ssl_emp.pruning.selectors.target_rates import TargetRateSelector


def cluster_sizes(assignment: torch.Tensor, count: int) -> torch.Tensor:
    return torch.bincount(assignment, minlength=count)


def guarded(assignment: torch.Tensor, similarity: torch.Tensor, count: int) -> torch.Tensor:
    """[N] bool: the members of clusters that are outliers, not modes: a cluster of one, or one whose cohesion
    (its members' mean cosine to the centroid) lies nearer to that of as many unrelated points than to the pool's
    typical cohesion. m unrelated (orthogonal) unit vectors have cohesion 1 / sqrt(m), so a cluster of m is loose
    below ``(typical + 1 / sqrt(m)) / 2``; both ends come from the pool and its sizes, not from a fixed cosine."""
    sizes = cluster_sizes(assignment, count)
    cohesion = torch.zeros(count, dtype=torch.float64).index_add_(0, assignment, similarity.double())
    cohesion = cohesion / sizes.clamp_min(1)
    typical = cohesion[assignment].median()
    unrelated = sizes.double().clamp_min(1).rsqrt()
    flagged = (sizes <= 1) | (cohesion < (typical + unrelated) / 2)
    return flagged[assignment]


class CoverageSelector(TargetRateSelector):
    reads = (
        "coverage_density",
        "coverage_balance",
        "coverage_power",
        "coverage_threshold",
        "coverage_guard",
        "floor",
        "clusters",
        "embed_every",
    )
    needs_embeddings = True

    def neighbours(self) -> torch.Tensor:
        """Each sample's near-neighbour count, counted once per refresh of the memory (on its device; CPU here)."""
        return self.memory.neighbour_counts(self.cfg.coverage_threshold, self.cfg.clusters).cpu()

    def weights(self, table):
        if self.cfg.coverage_density == "threshold":
            counts = self.neighbours()
            info = {
                "coverage_with_neighbours": float((counts > 1).float().mean()),
                "coverage_mean_neighbours": float(counts.float().mean()),
            }
            return counts.double().pow(-self.cfg.coverage_power), info
        clustering = self.memory.clusters(self.cfg.clusters)
        assignment = clustering.assignment.cpu()
        sizes = cluster_sizes(assignment, clustering.count).double()
        return sizes[assignment].pow(self.cfg.coverage_balance - 1.0), {"coverage_clusters": clustering.count}

    def rates(self, weights, keep, info):
        caps = None
        if self.cfg.coverage_guard:
            clustering = self.memory.clusters(self.cfg.clusters)
            flagged = guarded(clustering.assignment.cpu(), clustering.similarity.cpu(), clustering.count)
            caps = torch.where(flagged, keep / weights.numel(), 1.0).double()
            info["coverage_guarded_share"] = float(flagged.double().mean())
        rates = target_rates(weights, keep, caps)
        floor = self.cfg.floor
        return floor * (keep / weights.numel()) + (1.0 - floor) * rates
