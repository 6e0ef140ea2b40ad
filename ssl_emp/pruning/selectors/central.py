"""``central``: easy first inside clusters, for aggressive rates (Sorscher et al., NeurIPS 2022, self-supervised
prototypes; SAS, Joshi and Mirzasoleiman, ICML 2023, keeps the samples most similar to their latent class). The
embedding memory is clustered by spherical k-means; each cluster gets a share of the budget proportional to
``size ** balance`` (1: its size, as ``random`` would give it; 0: equal shares); inside a cluster the samples
nearest its centroid are kept. The kept set is the same every epoch until the memory is refreshed
(``embed_every``): a static coreset, as published, so most samples are never revisited at high rates."""

from __future__ import annotations

import torch

from ssl_emp.pruning.embeddings import target_rates
from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.selectors.base import Selector, budget


class CentralSelector(Selector):
    reads = ("clusters", "balance", "embed_every")
    uses_scores = False
    needs_embeddings = True

    def select(self, table, rate, generator):
        keep = budget(table.num_samples, rate)
        clustering = self.memory.clusters(self.cfg.clusters)
        assignment, similarity = clustering.assignment.cpu(), clustering.similarity.cpu()
        sizes = torch.bincount(assignment, minlength=clustering.count)
        shares = _whole(target_rates(sizes.double().pow(self.cfg.balance) * (sizes > 0), keep, caps=sizes), keep)
        groups = assignment.argsort(stable=True).split(sizes.tolist())  # each cluster's members, ascending
        kept = []
        for cluster in (shares > 0).nonzero().squeeze(1).tolist():
            members = groups[cluster]
            members = members[torch.randperm(members.numel(), generator=generator)]  # ties at random
            kept.append(members[similarity[members].argsort(descending=True, stable=True)[: int(shares[cluster])]])
        return EpochPlan(torch.cat(kept), info={"central_clusters_kept": len(kept)})


def _whole(shares: torch.Tensor, total: int) -> torch.Tensor:
    """Real shares rounded to whole samples that add up to ``total`` (largest remainders round up)."""
    floor = shares.floor()
    extra = total - int(floor.sum())
    if extra > 0:
        floor[(shares - floor).argsort(descending=True, stable=True)[:extra]] += 1
    return floor.long()
