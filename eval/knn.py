"""Weighted kNN on frozen features: ``python -m eval.knn --checkpoint RUN_DIR_OR_FILE``.

The usual SSL protocol (Wu et al., 2018): cosine similarity to every training feature, the k nearest
vote with weight ``exp(sim / temperature)``. Defaults k=200, temperature 0.1. The vote is lightly's
``knn_predict``; this module adds chunking over queries, so memory stays [chunk, N].
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from eval.features import frozen_features
from eval.report import add_common_args, result_header, run_evaluation
from ssl_emp.engine.trainer import resolve_device


@torch.no_grad()
def knn_rankings(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, num_classes: int,
                 k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Class indices per query, most voted first: ``[Q, num_classes]``."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0 (got k={k}, temperature={temperature}).")
    bank = F.normalize(train_x.float(), dim=1).T.contiguous()
    query = F.normalize(query_x.float(), dim=1)
    k = min(k, len(train_x))
    return torch.cat([knn_predict(query[s:s + chunk], bank, train_y, num_classes, k, temperature)
                      for s in range(0, len(query), chunk)])


def knn_accuracy(train_x, train_y, query_x, query_y, num_classes, k=200, temperature=0.1) -> dict:
    ranked = knn_rankings(train_x, train_y, query_x, num_classes, k, temperature)
    hits = ranked == query_y[:, None]
    result = {"top1": hits[:, 0].float().mean().item()}
    if num_classes >= 10:
        result["top5"] = hits[:, :5].any(dim=1).float().mean().item()
    return result


def knn_eval(checkpoint: str, *, k: int = 200, temperature: float = 0.1, random_init: bool = False,
             data_root: Optional[str] = None, device: str = "auto", train_subset: Optional[int] = None,
             seed: int = 0) -> dict:
    """kNN-classify the test split against the training split's features; returns the result record."""
    started = time.perf_counter()
    dev = resolve_device(device)
    features = frozen_features(checkpoint, dev, random_init=random_init, seed=seed, data_root=data_root,
                               train_subset=train_subset)
    train_x = features.train_x
    accuracy = knn_accuracy(train_x, features.train_y, features.test_x, features.test_y,
                            features.pretrained.data_info["num_classes"], k, temperature)
    return {
        **result_header(checkpoint, features.pretrained, random_init),
        "train_images": len(train_x), "test_images": len(features.test_x), "feature_dim": train_x.shape[1],
        **accuracy,
        "seconds": round(time.perf_counter() - started, 2),
        "knn": {"k": k, "temperature": temperature},
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.knn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--k", type=int, default=200, help="neighbours that vote")
    parser.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(similarity / temperature)")
    args = parser.parse_args(argv)
    kwargs = dict(k=args.k, temperature=args.temperature, data_root=args.data_root, device=args.device,
                  train_subset=args.train_subset, seed=args.seed)
    return run_evaluation(knn_eval, args, kwargs, "knn", f"kNN (k={args.k}, t={args.temperature})")


if __name__ == "__main__":
    sys.exit(main())
