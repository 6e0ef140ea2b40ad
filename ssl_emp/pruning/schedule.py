"""Which epochs of a run are pruned, and which rates a number of epochs can reach.

The first ``warmup_epochs`` epochs train on all the data, and so do the last ``ceil(anneal * epochs)``; the
pruned epochs in between skip ``rate * epochs / pruned_epochs`` each, which must stay below 1.

The annealing epochs give way to the rate: where the full annealing window leaves too few pruned epochs, it
is shortened, one epoch at a time and down to none, until the rate fits. Settings that fit as asked are left
exactly as they were. So whether a rate can be reached depends on the warm-up alone: ``rate < 1 - warmup /
epochs``, which only loosens as epochs are added (a rounded-up window alone would make it jump: rate 0.7 with
anneal 0.125 fits 8 epochs but not 9 or 10, whose window is 2 epochs long).
"""

from __future__ import annotations

import math


def annealed_epochs(anneal: float, epochs: int) -> int:
    """InfoBatch anneals over ``ceil((1 - delta) * epochs)`` epochs; ``anneal`` is ``1 - delta``."""
    return min(epochs, math.ceil(anneal * epochs - 1e-9))


def _fits(rate: float, epochs: int, pruned: int) -> bool:
    return pruned > 0 and rate * epochs / pruned < 1.0


def anneal_length(rate: float, epochs: int, warmup_epochs: int, anneal: float) -> int:
    """The full-data epochs at the end of the run: ``ceil(anneal * epochs)``, shortened only as far as the rate
    needs (unchanged where it cannot be reached at all; the caller refuses that)."""
    asked = annealed_epochs(anneal, epochs)
    warmup = min(warmup_epochs, epochs)
    for length in range(asked, -1, -1):
        if _fits(rate, epochs, epochs - warmup - length):
            return length
    return asked


def max_rate(epochs: int, warmup_epochs: int = 1) -> float:
    """The highest run-level rate, to 3 decimals, that ``epochs`` epochs can reach after their warm-up."""
    pruned = epochs - min(warmup_epochs, epochs)
    if pruned <= 0:
        return 0.0
    thousandths = math.floor(1000 * pruned / epochs)
    while thousandths > 0 and not _fits(thousandths / 1000, epochs, pruned):
        thousandths -= 1
    return thousandths / 1000


def min_epochs(rate: float, warmup_epochs: int = 1) -> int:
    """The fewest epochs in which ``rate`` can be reached (1 for rate 0)."""
    if not 0 <= rate < 1:
        raise ValueError(f"rate={rate}: a pruning rate is at least 0 and below 1")
    epochs = max(1, math.floor(warmup_epochs / (1 - rate)))
    while rate > 0 and not _fits(rate, epochs, epochs - min(warmup_epochs, epochs)):
        epochs += 1
    return epochs


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def unreachable(rate: float, epochs: int, warmup_epochs: int) -> str:
    """Why ``rate`` cannot be reached in ``epochs`` epochs, naming what would work (one line)."""
    pruned = epochs - min(warmup_epochs, epochs)
    if pruned <= 0:
        why = f"warmup_epochs={warmup_epochs} trains all of them on all the data"
    else:
        why = (
            f"after {_count(warmup_epochs, 'warm-up epoch')} on all the data, the other {pruned} would each have "
            f"to skip {rate * epochs / pruned:.2f} of it"
        )
    return (
        f"rate={rate} cannot be reached in {_count(epochs, 'epoch')}: {why}. The highest rate reachable in "
        f"{_count(epochs, 'epoch')} is {max_rate(epochs, warmup_epochs)}; rate {rate} needs at least "
        f"{_count(min_epochs(rate, warmup_epochs), 'epoch')} (or fewer warmup_epochs)."
    )
