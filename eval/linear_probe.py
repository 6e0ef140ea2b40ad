"""Linear probe: ``python -m eval.linear_probe --checkpoint RUN_DIR_OR_FILE``.

Features are extracted once with the backbone frozen; a linear classifier is
then trained on the cached, standardised features. (lightly's
``LinearClassifier`` runs the backbone at every step under Lightning; on cached
features the probe takes seconds instead.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from eval.features import frozen_features
from eval.report import add_common_args, common_kwargs, result_header, run_evaluation
from ssl_emp.device import resolve_device


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (topk == labels[:, None]).any(dim=1).float().mean().item()


def logit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``top1``, and ``top5`` where there are at least 10 classes."""
    result = {"top1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] >= 10:
        result["top5"] = topk_accuracy(logits, labels, 5)
    return result


def train_linear_classifier(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, epochs: int = 100,
                            lr: float = 0.01, weight_decay: float = 1e-4, batch_size: int = 256,
                            seed: int = 0) -> nn.Module:
    """AdamW with cosine decay on standardised features; the returned module standardises its input itself."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    x = (train_x - mean) / std
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(linear(x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()

    class Standardised(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.linear = linear

        def forward(self, features):
            return self.linear((features - self.mean) / self.std)

    return Standardised().eval()


def linear_probe(checkpoint: str, *, random_init: bool = False, epochs: int = 100, lr: float = 0.01,
                 weight_decay: float = 1e-4, data_root: Optional[str] = None, device: str = "auto",
                 train_subset: Optional[int] = None, seed: int = 0, dataset: Optional[str] = None) -> dict:
    """Probe one backbone; returns the result record (also what the CLI writes as JSON)."""
    started = time.perf_counter()
    dev = resolve_device(device)
    features = frozen_features(checkpoint, dev, random_init=random_init, seed=seed, data_root=data_root,
                               train_subset=train_subset, dataset=dataset)
    train_x, train_y = features.train_x, features.train_y
    num_classes = features.num_classes
    classifier = train_linear_classifier(train_x, train_y, num_classes, epochs, lr, weight_decay, seed=seed)
    with torch.no_grad():
        logits = classifier(features.test_x)
    return {
        **result_header(checkpoint, features.pretrained, random_init, features.dataset, features.adapted),
        "train_images": len(train_x), "test_images": len(features.test_x),
        "feature_dim": train_x.shape[1],
        **logit_accuracy(logits, features.test_y),
        "seconds": round(time.perf_counter() - started, 2),
        "probe": {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed},
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.linear_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--epochs", type=int, default=100, help="classifier epochs over the cached features")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    args = parser.parse_args(argv)
    kwargs = dict(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, **common_kwargs(args))
    return run_evaluation(linear_probe, args, kwargs, "linear_probe", "linear probe")


if __name__ == "__main__":
    sys.exit(main())
