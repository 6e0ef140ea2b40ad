"""``coverage``: spread the budget over the data's modes instead of its copies. A sample's target rate falls with
the number of its near neighbours in the embedding memory (clean images, centred and normalised; neighbours are
the members of its k-means cluster within cosine ``coverage_threshold``, searched as SemDeDup does):
``rate_i ∝ neighbours_i ** -coverage_power``. A burst of m near-copies then shares about one sample's budget at
power 1; power 0 is ``random``'s expectation, drawn as RS2 draws. Draws follow the rates by credit, so no sample
with a neighbourhood like most others' waits long; a near-copy waits about m times longer, by design.

The memory is refreshed after the warm-up and every ``embed_every`` epochs (0: never again); each refresh costs a
forward of every sample's clean image, which the run reports (``pruning/embedding_forwards``).
"""

from __future__ import annotations

import torch

from ssl_emp.pruning.selectors.target_rates import TargetRateSelector


class CoverageSelector(TargetRateSelector):
    reads = ("coverage_power", "coverage_threshold", "clusters", "embed_every")
    needs_embeddings = True

    def neighbours(self) -> torch.Tensor:
        """Each sample's near-neighbour count, counted once per refresh of the memory (on its device; CPU here)."""
        return self.memory.neighbour_counts(self.cfg.coverage_threshold, self.cfg.clusters).cpu()

    def weights(self, table):
        counts = self.neighbours()
        info = {"coverage_with_neighbours": float((counts > 1).float().mean()),
                "coverage_mean_neighbours": float(counts.float().mean())}
        return counts.double().pow(-self.cfg.coverage_power), info
