"""The benchmark's statistics: paired t-intervals over seeds, Holm's step-down adjustment over a whole table of
comparisons, Fieller's interval for a ratio of paired means (gap closure), and the smallest detectable effect."""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

from scipy import stats

ALPHA = 0.05


def paired(values: Sequence[float], references: Sequence[float]) -> Optional[dict]:
    """Mean of the per-seed differences, its 95% t-interval and two-sided p; None under 2 pairs."""
    diffs = [v - r for v, r in zip(values, references)]
    if len(diffs) < 2:
        return None
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = float(stats.t.ppf(1 - ALPHA / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    if sd > 0:
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(len(diffs))), len(diffs) - 1))
    else:
        p = 0.0 if mean != 0 else 1.0
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(diffs), "p": p}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m is multiplied by m - k + 1,
    then made non-decreasing in that order and capped at 1. Rejecting where adjusted p < alpha controls the
    family-wise error at alpha over all m comparisons."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def fieller(numerators: Sequence[float], denominators: Sequence[float]) -> Optional[dict]:
    """The ratio mean(numerators) / mean(denominators) of paired per-seed values, with Fieller's 95% interval: every
    theta for which the paired t-test of numerator - theta * denominator does not reject 0. Where the denominator's
    mean is not itself significantly away from 0 the set is unbounded (``lo``/``hi`` None). None under 3 pairs."""
    n = len(numerators)
    if n < 3 or n != len(denominators):
        return None
    a, b = statistics.mean(numerators), statistics.mean(denominators)
    saa, sbb = statistics.variance(numerators), statistics.variance(denominators)
    sab = sum((x - a) * (y - b) for x, y in zip(numerators, denominators)) / (n - 1)
    t2 = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) ** 2 / n
    qa, qb, qc = b * b - t2 * sbb, -2 * (a * b - t2 * sab), a * a - t2 * saa
    ratio = a / b if b != 0 else float("nan")
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return {"mean": ratio, "lo": None, "hi": None, "n": n}
    root = math.sqrt(disc)
    return {"mean": ratio, "lo": (-qb - root) / (2 * qa), "hi": (-qb + root) / (2 * qa), "n": n}


def min_detectable_effect(differences: list[dict]) -> Optional[float]:
    """The paired difference detectable at 80% power (two-sided 5%), from the spread of the per-seed
    differences: ``(t_.975 + t_.80) * sd / sqrt(n)``."""
    usable = [d for d in differences if d and d["n"] >= 2]
    if not usable:
        return None
    n = min(d["n"] for d in usable)
    sds = [(d["hi"] - d["mean"]) * math.sqrt(d["n"]) / stats.t.ppf(0.975, d["n"] - 1) for d in usable]
    return (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * statistics.median(sds) / math.sqrt(n)
