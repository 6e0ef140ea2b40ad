"""Quality signals that need no labels, for data that has none (an unlabelled folder, where no kNN can be read):

- **RankMe** (Garrido et al., 2023): the effective rank of the embeddings, ``exp`` of the entropy of their
  normalised singular values. It falls when the representation collapses onto few directions, and on several
  benchmarks its rise tracks downstream accuracy.
- **Alignment** and **uniformity** (Wang and Isola, 2020), on L2-normalised embeddings: alignment is the mean
  squared distance between the two views of an image (lower: more invariant), and uniformity is
  ``log mean exp(-2 ||z_i - z_j||^2)`` over pairs of images (lower: more spread over the sphere).

Each can mislead; docs/pretraining.md says when.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """The effective rank of ``features`` [N, D]: between 1 (every row on one line) and min(N, D)."""
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(view0: torch.Tensor, view1: torch.Tensor) -> float:
    """Mean squared distance between paired rows after L2 normalisation: 0 when both views embed alike."""
    z0, z1 = F.normalize(view0.double(), dim=1), F.normalize(view1.double(), dim=1)
    return float((z0 - z1).square().sum(dim=1).mean())


def uniformity(features: torch.Tensor, t: float = 2.0) -> float:
    """``log mean exp(-t ||z_i - z_j||^2)`` over distinct pairs of L2-normalised rows: 0 when all collapse onto
    one point, more negative the more evenly they spread."""
    z = F.normalize(features.double(), dim=1)
    distances = torch.pdist(z).square()
    return float(torch.logsumexp(-t * distances, dim=0) - torch.log(torch.tensor(float(len(distances)))))
