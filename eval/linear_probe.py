"""Linear probe: ``python -m eval.linear_probe --checkpoint RUN_DIR_OR_FILE``, or from Python
``eval.linear_probe.run("runs/NAME", dataset=..., batch_size=...) -> dict``.

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
from ssl_emp.progress import mode_for


def run(
    checkpoint: str,
    *,
    dataset: Optional[str] = None,
    batch_size: int = 256,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    random_init: bool = False,
    data_root: Optional[str] = None,
    device: str = "auto",
    train_subset: Optional[int] = None,
    seed: int = 0,
    show_progress: Optional[bool] = None,
) -> dict:
    """Probe one backbone (a run directory or checkpoint file) on its pretraining dataset or on ``dataset``;
    returns the result record (what the command writes as JSON). ``batch_size``: images a forward when
    extracting features, and features a step of the classifier. ``show_progress``: None for a bar in a
    terminal and plain lines otherwise, False for silence."""
    started = time.perf_counter()
    dev = resolve_device(device)
    progress = mode_for(show_progress)
    features = frozen_features(
        checkpoint,
        dev,
        random_init=random_init,
        seed=seed,
        data_root=data_root,
        train_subset=train_subset,
        dataset=dataset,
        batch_size=batch_size,
        progress=progress,
    )
    train_x, train_y = features.train_x, features.train_y
    num_classes = features.num_classes
    classifier = train_linear_classifier(
        train_x, train_y, num_classes, epochs, lr, weight_decay, batch_size, seed=seed, progress=progress
    )
    with torch.no_grad():
        logits = classifier(features.test_x)
    return {
        **result_header(checkpoint, features.pretrained, random_init, features.dataset, features.adapted),
        "train_images": len(train_x),
        "test_images": len(features.test_x),
        "feature_dim": train_x.shape[1],
        **logit_accuracy(logits, features.test_y),
        "seconds": round(time.perf_counter() - started, 2),
        "probe": {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed},
    }


linear_probe = run  # the name it had


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.linear_probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--epochs", type=int, default=100, help="classifier epochs over the cached features")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="images a forward when extracting features, and features a classifier step",
    )
    args = parser.parse_args(argv)
    kwargs = dict(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        **common_kwargs(args),
    )
    return run_evaluation(run, args, kwargs, "linear_probe", "linear probe")


if __name__ == "__main__":
    sys.exit(main())
