"""Weighted kNN on frozen features: ``python -m eval.knn --checkpoint RUN_DIR_OR_FILE``, or from Python
``eval.knn.run("runs/NAME", k=200, dataset=..., batch_size=...) -> dict``.

The usual SSL protocol (Wu et al., 2018; ``ssl_emp.evaluation.knn_classifier``): cosine similarity to every training
feature, the k nearest vote with weight ``exp(sim / temperature)``. Defaults k=200, temperature 0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from eval.report import add_common_args, common_kwargs, result_header, run_evaluation
from ssl_emp.device import resolve_device
from ssl_emp.evaluation import frozen_features, knn_accuracy
from ssl_emp.progress import mode_for


def run(
    checkpoint: str,
    *,
    k: int = 200,
    temperature: float = 0.1,
    dataset: Optional[str] = None,
    batch_size: int = 512,
    random_init: bool = False,
    data_root: Optional[str] = None,
    device: str = "auto",
    train_subset: Optional[int] = None,
    seed: int = 0,
    show_progress: Optional[bool] = None,
) -> dict:
    """kNN-classify the test split against the training split's features (``batch_size`` images a forward);
    returns the result record. ``show_progress``: None for a bar in a terminal and plain lines otherwise,
    False for silence."""
    started = time.perf_counter()
    dev = resolve_device(device)
    features = frozen_features(
        checkpoint,
        dev,
        random_init=random_init,
        seed=seed,
        data_root=data_root,
        train_subset=train_subset,
        dataset=dataset,
        batch_size=batch_size,
        progress=mode_for(show_progress),
    )
    train_x = features.train_x
    accuracy = knn_accuracy(
        train_x, features.train_y, features.test_x, features.test_y, features.num_classes, k, temperature
    )
    return {
        **result_header(checkpoint, features.pretrained, random_init, features.dataset, features.adapted),
        "train_images": len(train_x),
        "test_images": len(features.test_x),
        "feature_dim": train_x.shape[1],
        **accuracy,
        "seconds": round(time.perf_counter() - started, 2),
        "knn": {"k": k, "temperature": temperature},
    }


knn_eval = run  # the name it had


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.knn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--k", type=int, default=200, help="neighbours that vote")
    parser.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(similarity / temperature)")
    parser.add_argument("--batch-size", type=int, default=512, help="images a forward when extracting features")
    args = parser.parse_args(argv)
    kwargs = dict(k=args.k, temperature=args.temperature, batch_size=args.batch_size, **common_kwargs(args))
    return run_evaluation(run, args, kwargs, "knn", f"kNN (k={args.k}, t={args.temperature})")


if __name__ == "__main__":
    sys.exit(main())
