"""Dynamic data pruning in a plain PyTorch SimCLR loop built from lightly's modules: three lines of ssl_emp.

    .venv/bin/python examples/prune_plain_pytorch.py [--data fashion-mnist|digits] [--rate 0.5] [--epochs 6]

The three lines are marked ``# (1)``, ``# (2)`` and ``# (3)``; nothing else in the loop knows about pruning.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from example_common import example_parser, simclr_views, small_backbone, torchvision_dataset
from lightly.models.modules import SimCLRProjectionHead
from torch import nn
from torch.utils.data import DataLoader

from ssl_emp.pruning import Pruner, WithIndex


def per_sample_ntxent(z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent per sample (the mean of its two rows). lightly's NTXentLoss returns the batch mean only, and
    pruning needs one loss per sample."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(z0)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives, reduction="none").view(2, n).mean(dim=0)


def main(argv=None) -> float:
    parser = example_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    dataset = torchvision_dataset(args.data, args.root, simclr_views())
    backbone, feature_dim = small_backbone()
    model = nn.Sequential(backbone, SimCLRProjectionHead(feature_dim, 128, 32))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    try:
        pruner = Pruner(len(dataset), args.epochs, rate=args.rate)  # (1)
    except ValueError as exc:  # a rate these epochs cannot reach: the reason and what would work, in one line
        sys.exit(f"error: {exc}")
    # Near-equal batches of each epoch's plan: no small tail batch (a batch of one breaks BatchNorm).
    loader = DataLoader(
        WithIndex(dataset),
        batch_sampler=pruner.batch_sampler(args.batch_size),  # (2)
        num_workers=args.workers,
    )
    started = time.perf_counter()
    for epoch in range(args.epochs):
        loader.batch_sampler.set_epoch(epoch)
        total, seen = 0.0, 0
        for indices, ((view0, view1), _) in loader:
            per_sample = per_sample_ntxent(model(view0), model(view1))
            loss = pruner.step(indices, per_sample)  # (3)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + per_sample.sum().item(), seen + len(indices)
        print(f"epoch {epoch + 1}/{args.epochs}: trained {seen}/{len(dataset)} samples, loss {total / seen:.4f}")
    achieved = pruner.achieved_rate()
    print(
        f"achieved rate {achieved:.3f} (requested {args.rate}): {pruner.sample_forwards} of "
        f"{args.epochs * len(dataset)} sample-forwards in {time.perf_counter() - started:.1f} s"
    )
    return achieved


if __name__ == "__main__":
    main()
