"""Weighted kNN on frozen features (Wu et al., 2018), the usual SSL protocol.

Cosine similarity to every training feature; the k nearest vote with weight ``exp(sim / temperature)``.
The vote is lightly's ``knn_predict``; this module adds chunking over queries, so memory stays [chunk, N].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict


@torch.no_grad()
def knn_rankings(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class indices per query, most voted first: ``[Q, num_classes]``."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0 (got k={k}, temperature={temperature}).")
    bank = F.normalize(train_x.float(), dim=1).T.contiguous()
    query = F.normalize(query_x.float(), dim=1)
    k = min(k, len(train_x))
    return torch.cat(
        [
            knn_predict(query[s : s + chunk], bank, train_y, num_classes, k, temperature)
            for s in range(0, len(query), chunk)
        ]
    )


def knn_accuracy(train_x, train_y, query_x, query_y, num_classes, k=200, temperature=0.1) -> dict:
    ranked = knn_rankings(train_x, train_y, query_x, num_classes, k, temperature)
    hits = ranked == query_y[:, None]
    result = {"top1": hits[:, 0].float().mean().item()}
    if num_classes >= 10:
        result["top5"] = hits[:, :5].any(dim=1).float().mean().item()
    return result
