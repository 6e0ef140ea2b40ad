"""v4's summary: per cell (a regime and a rate) the oracle's headroom, each selector's paired differences
(Holm-adjusted over the whole table), its gap closure with Fieller's interval, and where its forwards went; the
tune decision; the measured cost of an embedding forward; and the recommendation, as ``protocol`` rules."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pruning_quality import protocol  # noqa: E402
from pruning_quality.regimes import ALL_REGIMES, metric  # noqa: E402
from pruning_quality.stats import ALPHA, fieller, holm, min_detectable_effect, paired  # noqa: E402

REFERENCES = {"random": "diff_vs_random", "full_equal_compute": "diff_vs_equal_compute"}
SHARES = (
    "effective_sample_share",
    "target_top10_share",
    "copy_forward_share",
    "junk_forward_share",
    "rare3_forward_share",
)


class MixedCommits(ValueError):
    pass


def one_commit(records: list[dict]) -> str:
    commits = sorted({r.get("commit", "unknown") for r in records})
    if len(commits) != 1 or commits[0].endswith("+dirty") or commits[0] == "unknown":
        counts = {c: sum(r.get("commit", "unknown") == c for r in records) for c in commits}
        raise MixedCommits(
            f"the records come from {counts}: a table needs one clean commit. Re-run the runs "
            "of the other commits from a worktree at one commit, or move them aside."
        )
    return commits[0]


def _by_seed(records, split="test") -> dict[int, float]:
    return {r["seed"]: metric(r, split) for r in records}


def _difference(runs, references) -> Optional[dict]:
    ref = _by_seed(references)
    shared = [s for s in sorted(_by_seed(runs)) if s in ref]
    mine = _by_seed(runs)
    return paired([mine[s] for s in shared], [ref[s] for s in shared])


def _gap_closure(runs, random, oracle) -> Optional[dict]:
    mine, base, best = _by_seed(runs), _by_seed(random), _by_seed(oracle)
    shared = [s for s in sorted(mine) if s in base and s in best]
    return fieller([mine[s] - base[s] for s in shared], [best[s] - base[s] for s in shared])


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def passes_gate(headroom: Optional[dict]) -> bool:
    return bool(headroom and headroom["mean"] >= protocol.GATE and headroom["lo"] > 0)


def summarise_cell(records: list[dict], regime: str, rate: float) -> dict:
    floors = [metric(r, "test") for r in records if r["regime"] == regime and r["stage"] == "floor"]
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r["regime"] == regime and r["stage"] == "report" and r["requested_rate"] in (rate, 0.0):
            groups.setdefault(r["method"], []).append(r)
    random, oracle = groups.get("random", []), groups.get("oracle", [])
    rows = {}
    for method, group in sorted(groups.items()):
        row = {
            "n": len(group),
            "mean": statistics.mean(metric(r, "test") for r in group),
            "std": statistics.stdev(metric(r, "test") for r in group) if len(group) > 1 else 0.0,
            "achieved_rate": statistics.mean(r["achieved_rate"] for r in group),
            **{share: _mean_or_none(r.get(share) for r in group) for share in SHARES},
            "embed_share": _mean_or_none(
                r["embedding_seconds"] / r["train_seconds"] for r in group if r.get("embedding_forwards")
            ),
        }
        if method in protocol.SELECTORS:
            for reference, name in REFERENCES.items():
                row[name] = _difference(group, groups.get(reference, []))
            row["gap_closure"] = _gap_closure(group, random, oracle)
        rows[method] = row
    headroom = _difference(oracle, random)
    full = rows.get("full", {}).get("mean")
    return {
        "regime": regime,
        "rate": rate,
        "metric": ALL_REGIMES[regime].metric,
        "epochs": protocol.EPOCHS[regime],
        "floor": statistics.mean(floors) if floors else None,
        "full": full,
        "full_minus_random": full - rows["random"]["mean"] if full and "random" in rows else None,
        "oracle_headroom": {**headroom, "passes": passes_gate(headroom)} if headroom else None,
        "min_detectable_effect": min_detectable_effect(
            [rows[m].get("diff_vs_random") for m in rows if m in protocol.SELECTORS]
        ),
        "rows": rows,
    }


def adjust(cells: list[dict]) -> None:
    """Holm over every selector comparison in the table, written into each difference as ``p_holm``."""
    found = [
        row[name]
        for cell in cells
        for method, row in cell["rows"].items()
        if method in protocol.SELECTORS
        for name in REFERENCES.values()
        if row.get(name)
    ]
    for difference, adjusted in zip(found, holm([d["p"] for d in found])):
        difference["p_holm"] = adjusted


def _significant(d: Optional[dict], sign: int) -> bool:
    return bool(d and d.get("p_holm", 1.0) < ALPHA and d["mean"] * sign > 0)


def recommend(cells: list[dict]) -> dict:
    """Per selector, whether it qualifies (protocol docstring), and the one recommendation."""
    verdicts = {}
    for method in protocol.SELECTORS:
        gated = [c for c in cells if c["oracle_headroom"] and c["oracle_headroom"]["passes"]]
        wins = [
            method in c["rows"]
            and _significant(c["rows"][method].get("diff_vs_random"), 1)
            and _significant(c["rows"][method].get("diff_vs_equal_compute"), 1)
            for c in gated
        ]
        losses = [
            c["regime"] + f"@{c['rate']}"
            for c in cells
            if method in c["rows"] and _significant(c["rows"][method].get("diff_vs_random"), -1)
        ]
        verdicts[method] = {
            "gated_cells": len(gated),
            "wins_in_gated": sum(wins),
            "significant_losses": losses,
            "qualifies": bool(gated) and all(wins) and not losses,
        }
    qualified = [m for m, v in verdicts.items() if v["qualifies"]]
    return {"verdicts": verdicts, "recommended": qualified[0] if qualified else "random"}


def embed_cost(records: list[dict]) -> Optional[dict]:
    """The measured wall-clock cost of an embedding forward in training sample-forwards, beside the FLOPs charge."""
    ratios = [
        (r["embedding_seconds"] / r["embedding_forwards"])
        / ((r["train_seconds"] - r["embedding_seconds"]) / r["sample_forwards"])
        for r in records
        if r.get("embedding_forwards") and r["train_seconds"] > r["embedding_seconds"] > 0
    ]
    return (
        {"charged": protocol.EMBED_COST, "measured_median": statistics.median(ratios), "runs": len(ratios)}
        if ratios
        else None
    )


def summarise(records: list[dict], out_dir: Path, remaining: Optional[int] = None) -> dict:
    commit = one_commit(records)
    cells = [
        summarise_cell(records, regime, rate)
        for regime, rate in protocol.CELLS
        if any(r["regime"] == regime and r["stage"] == "report" for r in records)
    ]
    adjust(cells)
    summary = {
        "commit": commit,
        "complete": remaining == 0,
        "runs": len(records),
        "command": "python benchmarks/pruning_quality --out benchmarks/results/v4",
        "machine": sorted(
            {json.dumps({k: r.get(k) for k in ("cpu_capability", "cpu_model", "torch")}) for r in records}
        ),
        "tune": protocol.tuned(records),
        "embed_cost": embed_cost(records),
        "cells": cells,
        **recommend(cells),
    }
    (out_dir / "pruning_quality_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "pruning_quality.md").write_text(markdown(summary))
    plot(summary, out_dir / "pruning_quality.png")
    return summary


def _interval(d) -> str:
    if not d:
        return ""
    if d.get("lo") is None:
        return f"{d['mean']:+.3f} [unbounded]"
    adjusted = f", Holm p {d['p_holm']:.3g}" if "p_holm" in d else ""
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{adjusted}"


def _cell(value, spec=".3f") -> str:
    return "" if value is None else format(value, spec)


def markdown(summary: dict) -> str:
    lines = [
        f"Benchmark v4, commit `{summary['commit']}` ({summary['runs']} runs"
        f"{'' if summary['complete'] else ', incomplete'}). Command: `{summary['command']}`. "
        f"Recommended: **`{summary['recommended']}`**.",
        "",
    ]
    tune = summary.get("tune")
    if tune:
        lines += [
            "## Tuning (validation, Fashion-MNIST family, rate 0.9)",
            "",
            "| candidate | mean gain over random | " + " | ".join(protocol.TUNE) + " | dropped |",
            "|---|---|" + "---|" * len(protocol.TUNE) + "---|",
        ]
        for c in tune["candidates"]:
            lines.append(
                f"| {c['method']} | {c['mean_gain']:+.4f} | "
                + " | ".join(f"{c['gains'][r]:+.4f}" for r in protocol.TUNE)
                + f" | {c['dropped']} |"
            )
        lines += ["", f"chosen: `{tune['method']}`" + (" (every candidate was dropped)" if tune["all_dropped"] else "")]
    if summary.get("embed_cost"):
        e = summary["embed_cost"]
        lines += [
            "",
            f"embedding forward charged at {e['charged']:.3f} sample-forwards; measured "
            f"{e['measured_median']:.3f} (median of {e['runs']} runs)",
        ]
    for cell in summary["cells"]:
        gate = cell["oracle_headroom"]
        lines += [
            "",
            f"## {cell['regime']} at rate {cell['rate']} ({cell['metric']}, {cell['epochs']} epochs)",
            "",
            f"floor {_cell(cell['floor'], '.4f')}; full {_cell(cell['full'], '.4f')}; oracle headroom "
            f"{_interval(gate)} ({'passes' if gate and gate['passes'] else 'does not pass'} the gate)",
            "",
            "| method | n | metric | vs random | vs equal compute | gap closure (Fieller) | ESS share | "
            "top-10 share | copy fwd | junk fwd | rare-3 fwd |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, row in cell["rows"].items():
            lines.append(
                "| "
                + " | ".join(
                    [
                        method,
                        str(row["n"]),
                        f"{row['mean']:.4f} ± {row['std']:.4f}",
                        _interval(row.get("diff_vs_random")),
                        _interval(row.get("diff_vs_equal_compute")),
                        _interval(row.get("gap_closure")),
                        *(_cell(row.get(s)) for s in SHARES),
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Per cell, each selector's and the oracle's paired difference from ``random`` with its 95% interval."""
    cells = [c for c in summary["cells"] if c["rows"]]
    if not cells:
        return
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(cells) * 3 + 1.5))
    labels, y = [], 0
    for cell in cells:
        for method, color in (("oracle", "black"), ("coverage[v4]", "tab:blue"), ("coverage[v3]", "tab:orange")):
            d = cell["oracle_headroom"] if method == "oracle" else cell["rows"].get(method, {}).get("diff_vs_random")
            if d:
                ax.errorbar(
                    d["mean"], y, xerr=[[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]], fmt="o", capsize=3, color=color
                )
            labels.append(f"{cell['regime']} @{cell['rate']}: {method}")
            y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.axvline(0, color="grey", linewidth=1)
    ax.axvline(protocol.GATE, color="red", linestyle=":", linewidth=1, label=f"gate ({protocol.GATE})")
    ax.set_xlabel("metric − random, test seeds (paired 95% t-interval, unadjusted)")
    ax.invert_yaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
