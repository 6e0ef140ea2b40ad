"""The pruning engine's settings as plain keyword arguments, checked once, with the rules that tie them.

This is the one declaration of each pruning setting, its default, its range and its description:
``ssl_emp.config.PruningConfig`` (the typed command-line face) is derived from these fields and runs these
checks too, so a rule lives in one place whether the engine is driven by our config or by a user's own loop.
A field's ``metadata`` holds its description (``doc``) and its bounds (``ge``, ``gt``, ``le``, ``lt``,
``allow_inf_nan``), spelled as the config's validator reads them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Literal, Optional

# What a rate given alone prunes with, by the pruning benchmark's rule (docs/pruning.md, "Advice"): on curated
# data no selector, not even an oracle, beat ``random`` at equal compute (benchmark v3, rate 0.9), and on data
# never tuned on no selector's gain survived Holm's adjustment (benchmark v4), so a rate alone prunes at random.
# A scorer named without a selector gets the selector EMP measured best with (eps_greedy; benchmark v2,
# archive-8204556: matched InfoBatch's 1/(1-r) weights cost 0.04 to 0.06 top-1 at rate 0.7).
RECOMMENDED = {"scorer": "loss", "selector": "random"}
# EMP's memory forms by name, known without torch (the forms are ssl_emp.pruning.scorers.emp.MEMORY_FORMS, which
# refuses to load if the two disagree).
MEMORY_FORM_NAMES = ("loss_change", "drift", "recency", "spaced", "agreement", "disagreement", "entropy", "forgetting")
SCORE_SELECTOR = "eps_greedy"


def resolve_method(rate: float, scorer: Optional[str], selector: Optional[str]) -> tuple[str, str]:
    """``(scorer, selector)`` for what was named: a rate with no selector prunes with the recommended method,
    a scorer named alone gets the score-driven selector, and no rate with no selector prunes nothing."""
    if selector is None:
        if rate > 0:
            selector = SCORE_SELECTOR if scorer is not None else RECOMMENDED["selector"]
        else:
            selector = "full"
    return scorer or RECOMMENDED["scorer"], selector


def prunes(settings) -> bool:
    """Whether settings (anything with PruningSettings' attributes) skip anything: a selector other than
    ``full`` and a rate, or InfoBatch's published rule, which needs no rate."""
    return settings.selector != "full" and (settings.rate > 0 or settings.infobatch_r is not None)


def _setting(default, doc: str, **bounds):
    return field(default=default, metadata={"doc": doc, **bounds})


@dataclass
class PruningSettings:
    rate: float = _setting(0.0, "fraction of sample-forwards skipped over the whole run", ge=0, lt=1)
    scorer: str = _setting("loss", "loss | emp | ucb")
    selector: str = _setting(
        "full",
        "full | random | rs2 | infobatch | topk | eps_greedy | coverage | stratified | "
        "central | prior; a rate given without one uses the recommended selector (README)",
    )
    beta: float = _setting(1.0, "emp: weight of the memory term", ge=0, allow_inf_nan=False)
    memory: str = _setting(
        "spaced",
        "emp memory form: loss_change | drift | recency | spaced | agreement | "
        "disagreement | entropy | forgetting (default chosen on validation by "
        "benchmark v2: benchmarks/results/archive-8204556)",
    )
    normalize: Literal["zscore", "none"] = _setting(
        "zscore",
        "emp: put loss and memory on one scale before combining (z-scores over the whole table), or "
        "none: raw loss + beta * memory (the paper's supervised form)",
    )
    warmup_epochs: int = _setting(1, "full-data epochs at the start (fill the score table)", ge=0)
    anneal: float = _setting(
        0.125, "the last ceil(anneal * epochs) epochs train on full data (InfoBatch's 1 - delta)", ge=0, lt=1
    )
    eps: float = _setting(0.1, "eps_greedy: random share of the kept budget", ge=0, le=1)
    ucb_c: float = _setting(1.0, "ucb: weight of the exploration bonus sqrt(log t / n_i)", ge=0, allow_inf_nan=False)
    history: int = _setting(5, "losses remembered per sample (ucb)", ge=1)
    infobatch_r: Optional[float] = _setting(
        None,
        "infobatch: run the published rule with this drop probability (no rate needed; the achieved "
        "rate is reported); unset: matched to the rate",
        ge=0,
        le=1,
    )
    infobatch_rescale: bool = _setting(True, "InfoBatch: weight kept below-threshold samples 1/(1-r)")
    coverage_density: Literal["threshold", "cluster"] = _setting(
        "threshold",
        "coverage: threshold (v3: rate falls as near neighbours at cosine coverage_threshold ** "
        "-coverage_power) | cluster (each k-means cluster's share grows as size ** coverage_balance; no cosine)",
    )
    coverage_balance: float = _setting(
        0.0,
        "coverage, cluster density: a cluster's share of the budget grows as "
        "size ** balance (1: random's expectation, 0: equal shares)",
        ge=0,
        le=1,
    )
    coverage_power: float = _setting(
        3.0,
        "coverage, threshold density: a sample's target rate falls as (near "
        "neighbours) ** -power; 0: random's expectation",
        ge=0,
        allow_inf_nan=False,
    )
    coverage_threshold: float = _setting(
        0.9,
        "coverage, threshold density: cosine similarity of clean-image "
        "embeddings (centred) at which two samples are near neighbours",
        gt=-1,
        le=1,
    )
    coverage_guard: bool = _setting(
        True,
        "coverage: cap a cluster of one, or one whose members are loose, at "
        "random's rate (an outlier is not a rare mode)",
    )
    floor: float = _setting(
        0.25, "coverage: every sample keeps at least this fraction of random's rate (0: none, 1: random)", ge=0, le=1
    )
    clusters: int = _setting(0, "coverage, central: k-means clusters of the embedding memory (0: sqrt(N))", ge=0)
    embed_every: int = _setting(
        0,
        "coverage, central: epochs between refreshes of the embedding memory (a forward "
        "of every clean image each; 0: once, after the warm-up)",
        ge=0,
    )
    balance: float = _setting(
        1.0,
        "central: a cluster's share of the budget grows as size ** balance (1: as random, 0: equal shares)",
        ge=0,
        le=1,
    )
    strata: int = _setting(10, "stratified: equal-width score strata the budget is spread over", ge=1)
    prior_file: Optional[str] = _setting(None, "prior: file of per-sample weights (.pt tensor or one number a line)")

    @classmethod
    def from_kwargs(
        cls, rate: float = 0.0, scorer: Optional[str] = None, selector: Optional[str] = None, **settings
    ) -> "PruningSettings":
        """Settings from keyword arguments, the method resolved as :func:`resolve_method` says."""
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(
                f"unknown pruning setting(s) {', '.join(sorted(unknown))}; known: "
                f"rate, scorer, selector, {', '.join(f.name for f in fields(cls)[3:])}"
            )
        scorer, selector = resolve_method(rate, scorer, selector)
        return cls(rate=rate, scorer=scorer, selector=selector, **settings)

    def __post_init__(self) -> None:
        check_settings(self)

    def as_dict(self) -> dict:
        return asdict(self)


_BOUNDS = {
    "ge": (lambda v, b: v >= b, "at least"),
    "gt": (lambda v, b: v > b, "greater than"),
    "le": (lambda v, b: v <= b, "at most"),
    "lt": (lambda v, b: v < b, "less than"),
}


def _out_of_bounds(value, metadata) -> str:
    """Why ``value`` breaks a field's declared bounds ('' when it does not)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number" if metadata.get("allow_inf_nan") is False or "ge" in metadata else ""
    for name, (holds, words) in _BOUNDS.items():
        if name in metadata and not holds(value, metadata[name]):
            return f"must be {words} {metadata[name]}"
    return ""


def check_settings(settings, prefix: str = "") -> None:
    """Raise ValueError on a setting out of range or settings that contradict each other. ``settings`` is
    anything with PruningSettings' attributes; ``prefix`` is how the caller spells their namespace (the
    config says ``pruning.``)."""
    from ssl_emp.pruning.scorers import SCORERS
    from ssl_emp.pruning.selectors import SELECTORS

    p = prefix
    for name, known in (("scorer", SCORERS), ("selector", SELECTORS), ("memory", MEMORY_FORM_NAMES)):
        if getattr(settings, name) not in known:
            raise ValueError(f"unknown {p}{name} '{getattr(settings, name)}'; known: {', '.join(known)}")
    for setting in fields(PruningSettings):
        value = getattr(settings, setting.name)
        if value is not None and (why := _out_of_bounds(value, setting.metadata)):
            raise ValueError(f"{p}{setting.name}={value}: {why} ({setting.metadata['doc']})")
    if settings.normalize not in ("zscore", "none"):
        raise ValueError(f"{p}normalize='{settings.normalize}'; known: zscore, none")
    if settings.coverage_density not in ("threshold", "cluster"):
        raise ValueError(f"{p}coverage_density='{settings.coverage_density}'; known: threshold, cluster")
    if settings.selector == "full" and settings.rate > 0:
        raise ValueError(
            f"{p}selector=full trains on every sample, so {p}rate={settings.rate} would prune "
            f"nothing. Name a selector (recommended: {RECOMMENDED['selector']}) or set {p}rate=0"
        )
    if settings.infobatch_r is not None and settings.rate > 0:
        raise ValueError(
            f"{p}infobatch_r runs InfoBatch's published rule, whose drop probability sets the "
            f"rate; {p}rate would be ignored. Give one: infobatch_r (published rule) or rate (r "
            "matched to that rate each epoch)"
        )
    # With no warm-up every score is still 'unseen' in the first epoch; matched InfoBatch then cannot
    # drop anything, and the run would silently fall short of the requested rate.
    if (
        settings.rate > 0
        and settings.selector == "infobatch"
        and settings.infobatch_r is None
        and settings.warmup_epochs == 0
    ):
        raise ValueError(
            f"the matched-budget infobatch selector needs {p}warmup_epochs >= 1 (a full epoch "
            "that scores every sample); with 0 the first epoch cannot prune and the rate is missed"
        )
