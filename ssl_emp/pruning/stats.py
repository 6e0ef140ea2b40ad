"""Low-Frequency Learning, made visible: how evenly the training visits are spread over the samples."""

from __future__ import annotations

from typing import Optional

import torch


def achieved_rate(sample_forwards: int, full_data_forwards: int) -> float:
    """The fraction of sample-forwards skipped: ``1 - trained / (epochs * N)``."""
    return 1.0 - sample_forwards / full_data_forwards if full_data_forwards else 0.0


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, towards 1 when few hold everything."""
    x = values.double().flatten().sort().values
    n = x.numel()
    if n == 0 or x.sum() == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * x).sum() / (n * x.sum()) - (n + 1) / n).item())


def visit_histogram(visits: torch.Tensor) -> list[int]:
    """``hist[k]`` = number of samples trained on exactly k times so far."""
    return torch.bincount(visits.flatten().cpu()).tolist()


def score_quantiles(scores: torch.Tensor) -> dict[str, float]:
    finite = scores[scores.isfinite()].double().cpu()
    if finite.numel() == 0:
        return {}
    q = torch.quantile(finite, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    return {"min": q[0], "p10": q[1], "p50": q[2], "p90": q[3], "max": q[4], "mean": float(finite.mean())}


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    values, inverse, counts = torch.unique(x.double(), return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    return (first + (counts - 1) / 2.0).double()[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> Optional[float]:
    """Spearman rank correlation of two equally long vectors; None when either is constant or too short."""
    if a.numel() < 3:
        return None
    ra, rb = _ranks(a.flatten()), _ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    return None if float(denom) == 0 else float((ra * rb).sum() / denom)
