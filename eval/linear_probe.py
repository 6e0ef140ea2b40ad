"""Linear probe: ``python -m eval.linear_probe --checkpoint RUN_DIR_OR_FILE``.

Features are extracted once with the backbone frozen; a linear classifier is
then trained on the cached, standardised features. (lightly's
``LinearClassifier`` runs the backbone at every step under Lightning; on cached
features the probe takes seconds instead.)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import torch

from eval.report import add_common_args, common_kwargs, result_header, run_evaluation
from ssl_emp.device import resolve_device
from ssl_emp.evaluation import frozen_features, logit_accuracy, train_linear_classifier


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
