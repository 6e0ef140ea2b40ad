"""The pruning benchmark's statistics and plan, and the committed results the README and defaults rest on."""

import importlib.util
import json
from pathlib import Path

import pytest
from scipy import stats

from ssl_emp.config import PruningConfig
from ssl_emp.pruning import RECOMMENDED as RECOMMENDED_PRUNING

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = ROOT / "benchmarks" / "results" / "pruning_quality_summary.json"
_spec = importlib.util.spec_from_file_location("pruning_quality", ROOT / "benchmarks" / "pruning_quality.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(method, seed, top1, rate=0.7, dataset="digits", rho=None):
    return {"dataset": dataset, "method": method, "requested_rate": rate, "seed": seed, "top1": top1,
            "achieved_rate": rate, "train_seconds": 1.0, "memory_spearman": rho}


def test_paired_difference_is_the_t_interval_of_per_seed_differences():
    a = [_run("emp", s, t) for s, t in enumerate([0.90, 0.92, 0.91, 0.95, 0.93])]
    b = [_run("random", s, t) for s, t in enumerate([0.89, 0.90, 0.92, 0.91, 0.90])]
    diff = bench.paired_difference(a, b)
    expected = stats.ttest_rel([r["top1"] for r in a], [r["top1"] for r in b]).confidence_interval(0.95)
    assert diff["mean"] == pytest.approx(0.018) and diff["n"] == 5
    assert (diff["lo"], diff["hi"]) == pytest.approx((expected.low, expected.high))
    assert bench.paired_difference(a[:1], b) is None  # one shared seed gives no interval


def test_emp_default_rule_skips_terms_that_only_repeat_the_loss():
    records = []
    for i, name in enumerate(bench.ABLATIONS):
        rho = -0.95 if name == "emp[agreement,1]" else 0.2
        top1 = 0.99 if name == "emp[agreement,1]" else 0.80 + i / 100
        records += [_run(name, 0, top1, dataset=d, rho=rho) for d in ("digits", "fashion-mnist")]
    chosen = bench.choose_emp_default(records, ["digits", "fashion-mnist"], seeds=1)
    assert chosen["ablation"] == list(bench.ABLATIONS)[-1]  # the best top-1 among |rho| <= 0.9
    assert bench.choose_emp_default(records[:-1], ["digits", "fashion-mnist"], seeds=1) is None  # incomplete
    assert bench.choose_emp_default(records, ["digits", "fashion-mnist"], seeds=2) is None  # seeds missing


def test_plan_pairs_seeds_and_compares_at_equal_compute():
    runs = list(bench.planned_runs(["digits"], [], [0.7, 0.5], {0.7: 5, 0.5: 3}))
    at07 = {(m, s) for d, m, r, s, o in runs if r == 0.7}
    for method in ("random", "rs2", "full_equal_compute", "infobatch", "ucb", "eps_greedy"):
        assert {s for m, s in at07 if m == method} == set(range(5))
    assert {s for d, m, r, s, o in runs if r == 0.5 and m == "random"} == {0, 1, 2}
    equal = next(o for d, m, r, s, o in runs if m == "full_equal_compute" and r == 0.7)
    assert "train.epochs=18" in equal  # round(0.3 * 60)
    assert "emp" not in {m for d, m, r, s, o in runs}  # its form is chosen from the ablation first


@pytest.mark.skipif(not SUMMARY.is_file(), reason="the benchmark has not been run")
def test_committed_results_clear_the_floor_and_set_the_defaults():
    summary = json.loads(SUMMARY.read_text())
    for dataset, floor in summary["floor"].items():
        full = next(r for r in summary["rows"] if r["dataset"] == dataset and r["method"] == "full")
        assert full["mean"] - floor["mean"] >= 0.08, dataset
    if summary["emp_default"]:
        default = PruningConfig()
        assert (default.memory, default.beta) == (summary["emp_default"]["memory"], summary["emp_default"]["beta"])
        assert abs(summary["memory_spearman"]) <= 0.9
    if summary["recommended"]:
        recommended = dict(o.split("=") for o in summary["recommended"]["overrides"])
        assert recommended["pruning.selector"] == RECOMMENDED_PRUNING["selector"]
        assert recommended.get("pruning.scorer", "loss") == RECOMMENDED_PRUNING["scorer"]
    assert min(r["n"] for r in summary["rows"] if r["rate"] == 0.7) >= 5  # paired seeds at the main rate
