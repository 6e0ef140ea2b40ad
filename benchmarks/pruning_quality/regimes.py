"""The benchmark's regimes: what each pool is built from, the probe's splits, and the oracle's weights.

Two families. **Tuned on** (``TUNE``): regimes built from Fashion-MNIST at 16 px, v3's (``longtail``, ``dups90``,
``junk90-noise``) and the clean ``fashion-mnist``. **Never tuned on** (``TRANSFER``): regimes built from
scikit-learn's digits at 8 px, other data and another shape: long tails at imbalance 10, 20 and 50, near-copy
bursts, and a mix of a long tail, copies and noise junk. v3's other regimes stay defined, so its records can be
run again (``runs.rerun``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ssl_emp.config import load_pretrain_config
from ssl_emp.data import ImageBank, load_bank
from ssl_emp.data.variants import long_tailed, with_junk, with_near_duplicates

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = str(ROOT / "data")


@dataclass
class Regime:
    base: str  # the dataset the images and the probe's labels come from
    recipe: str
    overrides: list[str]
    epochs: tuple[int, ...]  # v3's candidates, cheapest first; v4 runs the last
    size: Optional[int] = None  # the pretraining pool drawn from the base training split (None: all)
    variant: Optional[str] = None  # longtail | duplicates | junk | mix
    variant_args: dict = field(default_factory=dict)
    metric: str = "top1"  # what the tables read: top1, or balanced accuracy where classes are imbalanced
    probe_per_class: int = 1000  # the probe's labelled training images per class (fewer where the split is small)
    val_per_class: int = 500


_SMALL = ["data.image_size=16", "model.width=8", "train.batch_size=256"]
_WIDE = ["data.image_size=16", "model.width=16", "train.batch_size=256"]  # 4x the small CNN's compute per image
_SMALL_POOL = ["data.image_size=16", "model.width=8", "train.batch_size=128"]  # 2,000 at 0.9 keep 200 an epoch
_FASHION = "configs/simclr_fashion_mnist.yaml"
# Digits at 8 px: the default recipe's CNN at width 8; batches of 32 fit what rate 0.9 keeps of the smallest pool.
_DIGITS = ["model.width=8", "train.batch_size=32"]
REGIMES = {
    "digits": Regime(
        "digits",
        "configs/default.yaml",
        ["model.width=8", "train.batch_size=128"],
        (12, 60),
        probe_per_class=100,
        val_per_class=30,
    ),
    "fashion-mnist": Regime("fashion-mnist", _FASHION, _SMALL, (12, 60), size=10000),
    "longtail": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (12, 60),
        variant="longtail",
        variant_args={"imbalance": 100, "max_per_class": 6000},
        metric="balanced_acc",
    ),
    "redundant": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (20, 60),
        variant="duplicates",
        variant_args={"unique": 2000, "bases": 100, "copies": 39, "max_shift": 2, "noise": 8.0},
    ),
}
_DUPS90 = {"unique": 1000, "bases": 10, "copies": 900, "max_shift": 0, "noise": 0.0}  # 9,000 of 10,010: 90% copies
CANDIDATES = {  # v3's search
    "dups90": Regime("fashion-mnist", _FASHION, _SMALL, (30, 60, 120), variant="duplicates", variant_args=_DUPS90),
    "junk90-flat": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (30, 60, 120),
        variant="junk",
        variant_args={"real": 1000, "junk": 9000, "kind": "flat"},
    ),
    "junk90-noise": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (30, 60, 120),
        variant="junk",
        variant_args={"real": 1000, "junk": 9000, "kind": "noise"},
    ),
    "junk50-blur": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (30, 60, 120),
        variant="junk",
        variant_args={"real": 5000, "junk": 5000, "kind": "blur"},
    ),
    "junk50-digits": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL,
        (60, 120),
        variant="junk",
        variant_args={"real": 1300, "junk": 1300, "kind": "other"},
    ),
    "small2k": Regime("fashion-mnist", _FASHION, _SMALL_POOL, (100, 200), size=2000),
    "small2k-junk50-noise": Regime(
        "fashion-mnist",
        _FASHION,
        _SMALL_POOL,
        (100, 200),
        variant="junk",
        variant_args={"real": 1000, "junk": 1000, "kind": "noise"},
    ),
    "wide-fashion-mnist": Regime("fashion-mnist", _FASHION, _WIDE, (30, 60), size=10000),
    "wide-dups90": Regime("fashion-mnist", _FASHION, _WIDE, (30, 60), variant="duplicates", variant_args=_DUPS90),
    "wide-junk90-noise": Regime(
        "fashion-mnist",
        _FASHION,
        _WIDE,
        (30, 60),
        variant="junk",
        variant_args={"real": 1000, "junk": 9000, "kind": "noise"},
    ),
}
_DIGITS_PROBE = {"probe_per_class": 100, "val_per_class": 30}
TRANSFER = {
    **{
        f"digits-lt{imbalance}": Regime(
            "digits",
            "configs/default.yaml",
            _DIGITS,
            (200,),
            variant="longtail",
            variant_args={"imbalance": imbalance},
            metric="balanced_acc",
            **_DIGITS_PROBE,
        )
        for imbalance in (10, 20, 50)
    },
    # 800 unique digits beside 20 bases with 24 near-copies each (shifted a pixel, pixel noise): 37% copies.
    "digits-bursts": Regime(
        "digits",
        "configs/default.yaml",
        _DIGITS,
        (200,),
        variant="duplicates",
        variant_args={"unique": 800, "bases": 20, "copies": 24, "max_shift": 1, "noise": 8.0},
        **_DIGITS_PROBE,
    ),
    # A long tail (imbalance 20), then 10 of its images copied 15 times each, then noise junk at 30% of the pool.
    "digits-mix": Regime(
        "digits",
        "configs/default.yaml",
        _DIGITS,
        (200,),
        variant="mix",
        variant_args={"imbalance": 20, "bases": 10, "copies": 15, "junk_share": 0.3},
        metric="balanced_acc",
        **_DIGITS_PROBE,
    ),
}
TUNE = ("longtail", "dups90", "junk90-noise", "fashion-mnist")
ALL_REGIMES = {**REGIMES, **CANDIDATES, **TRANSFER}


@dataclass
class RegimeData:
    pool: ImageBank  # what pretraining sees
    probe_train: ImageBank
    validation: ImageBank
    test: ImageBank
    rarest: list[int]  # the 3 rarest classes of the pool (long tails)
    is_copy: Optional[torch.Tensor]  # [N] bool (duplicates)
    is_junk: Optional[torch.Tensor]  # [N] bool (junk)


def _per_class(labels: torch.Tensor, counts: list[int], generator) -> list[torch.Tensor]:
    """Disjoint index sets, the i-th holding ``counts[i]`` images of every class (fewer if a class runs out)."""
    parts = [[] for _ in counts]
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in zip(parts, counts):
            part.append(members[start : start + count])
            start += count
    return [torch.cat(p).sort().values for p in parts]


def _mix(train: ImageBank, imbalance: float, bases: int, copies: int, junk_share: float):
    """A long tail, then ``bases`` of its images copied ``copies`` times, then noise junk at ``junk_share``."""
    tail = long_tailed(train, imbalance=imbalance, seed=0)
    copied = with_near_duplicates(
        tail.bank, unique=len(tail.bank) - bases, bases=bases, copies=copies, max_shift=1, noise=8.0, seed=0
    )
    junk = round(junk_share / (1 - junk_share) * len(copied.bank))
    made = with_junk(copied.bank, real=len(copied.bank), junk=junk, kind="noise", seed=0)
    is_copy = torch.zeros(len(made.bank), dtype=torch.bool)
    real = made.source >= 0
    is_copy[real] = copied.is_copy[made.source[real]]
    return made.bank, tail.rarest[:3], is_copy, made.is_junk


def load_regime(name: str) -> RegimeData:
    """The regime's pretraining pool and probe sets, all from seed 0 (the same data for every run)."""
    regime = ALL_REGIMES[name]
    cfg = load_pretrain_config(ROOT / regime.recipe, [*regime.overrides, f"data.root={DATA_ROOT}"])
    train = load_bank(regime.base, cfg.data.root, "train", cfg.data.image_size)
    test = load_bank(regime.base, cfg.data.root, "test", cfg.data.image_size)
    generator = torch.Generator().manual_seed(0)
    validation, probe_train = _per_class(train.labels, [regime.val_per_class, regime.probe_per_class], generator)
    pool, rarest, is_copy, is_junk = train, [], None, None
    if regime.size:
        pool = train.subset(torch.randperm(len(train), generator=generator)[: regime.size])
    args = regime.variant_args
    if regime.variant == "longtail":
        made = long_tailed(train, seed=0, **args)
        pool, rarest = made.bank, made.rarest[:3]
    elif regime.variant == "duplicates":
        made = with_near_duplicates(train, seed=0, **args)
        pool, is_copy = made.bank, made.is_copy
    elif regime.variant == "junk":
        other = load_bank("digits", None, "train", None) if args["kind"] == "other" else None
        made = with_junk(train, seed=0, other=other, **args)
        pool, is_junk = made.bank, made.is_junk
    elif regime.variant == "mix":
        pool, rarest, is_copy, is_junk = _mix(train, **args)
    return RegimeData(pool, train.subset(probe_train), train.subset(validation), test, rarest, is_copy, is_junk)


def oracle_weights(data: RegimeData) -> torch.Tensor:
    """Per-sample target weights no real selector could compute: 0 for copies (their bases stay) and for junk,
    1 / (the size of the sample's class) otherwise, so every class gets an equal share where it can."""
    labels = data.pool.labels.cpu()
    sizes = torch.bincount(labels[labels >= 0], minlength=data.pool.num_classes).double()
    weights = torch.where(
        labels >= 0, 1.0 / sizes[labels.clamp_min(0)].clamp_min(1.0), torch.zeros(len(labels), dtype=torch.float64)
    )
    for excluded in (data.is_copy, data.is_junk):
        if excluded is not None:
            weights[excluded] = 0.0
    return weights


def metric(record: dict, split: str) -> float:
    """What a record's tables read on ``split``: top-1, or balanced accuracy where the regime is imbalanced."""
    return record[split][ALL_REGIMES[record["regime"]].metric]
