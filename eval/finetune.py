"""Fine-tuning: ``python -m eval.finetune --checkpoint RUN_DIR_OR_FILE``, or from Python
``eval.finetune.run("runs/NAME", epochs=30, dataset=..., batch_size=...) -> dict``.

The pretrained backbone plus a linear head, trained end to end on the labelled training split with
augmentation on the device (random resized crop, flip where the pretraining used it), SGD with cosine
decay; top-1 on the test split. With ``--prune-rate`` it prunes its own training data with the same
engine as pretraining, scored by the paper's supervised EMP form (cross-entropy + beta x prediction
entropy, i.e. scorer ``emp`` with ``memory=entropy``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import torch
from torch import nn
from torch.utils.data import BatchSampler

from eval.report import add_common_args, common_kwargs, result_header, run_evaluation
from ssl_emp.data import fit_batch_size
from ssl_emp.data.augment import build_finetune_pipeline
from ssl_emp.device import autocast, resolve_device
from ssl_emp.engine.optim import WarmupCosine
from ssl_emp.evaluation import load_eval_banks, load_pretrained, logit_accuracy
from ssl_emp.progress import Progress, mode_for
from ssl_emp.pruning import Pruner, SampleStats


def run(
    checkpoint: str,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    prune_rate: float = 0.0,
    prune_selector: str = "infobatch",
    prune_beta: float = 1.0,
    random_init: bool = False,
    data_root: Optional[str] = None,
    device: str = "auto",
    train_subset: Optional[int] = None,
    seed: int = 0,
    dataset: Optional[str] = None,
    show_progress: Optional[bool] = None,
) -> dict:
    """Fine-tune one backbone (a run directory or checkpoint file) with a linear head on the labelled split of
    its pretraining dataset or of ``dataset``; returns the result record (what the command writes as JSON). A
    ``batch_size`` above the training images shrinks to them, with a note. ``show_progress``: None for a bar in
    a terminal and plain lines otherwise, False for silence."""
    started = time.perf_counter()
    dev = resolve_device(device)
    pretrained = load_pretrained(checkpoint, dev, random_init=random_init, seed=seed)
    train_bank, test_bank, adapted = load_eval_banks(
        pretrained.config["data"], pretrained.data_info, data_root, train_subset, dataset=dataset
    )
    train_bank, test_bank = train_bank.to(dev), test_bank.to(dev)
    batch_size, note = fit_batch_size(batch_size, len(train_bank), "--batch-size")
    if note:
        print(note, file=sys.stderr)
    info, views = pretrained.data_info, pretrained.config["augment"]
    augment = build_finetune_pipeline(
        train_bank.image_size,
        info["mean"],
        info["std"],
        crop_scale_min=max(0.5, views["crop_scale_min"]),
        hflip_p=views["hflip_p"],
    ).to(dev)
    torch.manual_seed(seed)
    model = nn.Sequential(pretrained.backbone, nn.Linear(pretrained.feature_dim, train_bank.num_classes)).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = WarmupCosine(lr, epochs)  # cosine from the peak, as pretraining's schedule without warm-up
    # The engine as any supervised loop would use it: the paper's EMP form, CE + beta * prediction entropy.
    pruner = Pruner(
        len(train_bank),
        epochs,
        rate=prune_rate,
        scorer="emp",
        memory="entropy",
        normalize="none",
        beta=prune_beta,
        selector=prune_selector if prune_rate > 0 else "full",
        seed=seed,
        device=dev,
    )
    sampler = pruner.sampler()
    progress = Progress(
        "fine-tune epoch",
        epochs,
        pruner.planned_forwards() or epochs * len(train_bank),
        mode=mode_for(show_progress),
        every_seconds=30,
    )
    for epoch in range(epochs):
        model.train()
        sampler.set_epoch(epoch)
        batches = list(BatchSampler(sampler, batch_size, drop_last=False))
        progress.start(epoch + 1, len(batches))
        loss_sum, trained = torch.zeros((), device=dev), 0
        for b, batch in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = schedule(epoch + b / len(batches))
            indices = torch.tensor(batch, device=dev)
            with torch.no_grad():
                images = augment(train_bank.batch(indices))
            with autocast(dev):
                logits = model(images)
            loss = pruner.step(indices, SampleStats.from_logits(logits, train_bank.labels[indices]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            trained += len(batch)
            progress.step(b + 1, len(batch), loss.detach())
        progress.line(
            f"fine-tune epoch {epoch + 1}/{epochs}  loss {float(loss_sum) / max(trained, 1):.4f}  "
            f"trained {trained}/{len(train_bank)}"
        )
    progress.close()
    model.eval()
    with torch.no_grad(), autocast(dev):
        normalize = pretrained.normalize
        logits = torch.cat(
            [
                model(normalize(test_bank.batch(torch.arange(s, min(s + 512, len(test_bank)), device=dev))))
                for s in range(0, len(test_bank), 512)
            ]
        ).float()
    return {
        **result_header(checkpoint, pretrained, random_init, dataset or pretrained.config["data"]["name"], adapted),
        "train_images": len(train_bank),
        "test_images": len(test_bank),
        **logit_accuracy(logits, test_bank.labels),
        "pruning/requested_rate": pruner.requested_rate if pruner.active else 0.0,
        "pruning/achieved_rate": pruner.achieved_rate(epochs),
        "pruning/sample_forwards": pruner.sample_forwards,
        "seconds": round(time.perf_counter() - started, 2),
        "finetune": {
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "seed": seed,
            "prune_selector": pruner.cfg.selector,
            "prune_beta": prune_beta,
        },
    }


finetune = run  # the name it had


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (backbone and head)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--prune-rate", type=float, default=0.0, help="fraction of sample-forwards to skip over the run (0: no pruning)"
    )
    parser.add_argument("--prune-selector", default="infobatch", help="selector for the pruned epochs")
    parser.add_argument("--prune-beta", type=float, default=1.0, help="weight of the prediction-entropy term")
    args = parser.parse_args(argv)
    kwargs = dict(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        prune_rate=args.prune_rate,
        prune_selector=args.prune_selector,
        prune_beta=args.prune_beta,
        **common_kwargs(args),
    )
    return run_evaluation(run, args, kwargs, "finetune", "fine-tune", extra_line=_pruning_line)


def _pruning_line(result: dict) -> str:
    if not result["pruning/requested_rate"]:
        return ""
    return (
        f"  |  pruning: requested {result['pruning/requested_rate']:.3f}, "
        f"achieved {result['pruning/achieved_rate']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
