"""The pruning benchmark's rules and statistics, its committed results, and one recorded row run again."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

from ssl_emp.pruning import PruningSettings
from ssl_emp.pruning.settings import SCORE_SELECTOR

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
_spec = importlib.util.spec_from_file_location("pruning_quality", ROOT / "benchmarks" / "pruning_quality.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["pruning_quality"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)


def _run(method, seed, value, rate=0.9, regime="digits", stage="report", rho=None, epochs=30, commit="abc"):
    measured = {"top1": value, "balanced_acc": value}
    return {"regime": regime, "stage": stage, "method": method, "requested_rate": rate, "seed": seed,
            "epochs": epochs, "achieved_rate": rate or 0.0, "train_seconds": 1.0, "memory_spearman": rho,
            "commit": commit, "validation": measured, "test": measured}


def test_paired_difference_is_the_t_interval_of_per_seed_differences():
    a = [_run("emp", s, t) for s, t in enumerate([0.90, 0.92, 0.91, 0.95, 0.93])]
    b = [_run("random", s, t) for s, t in enumerate([0.89, 0.90, 0.92, 0.91, 0.90])]
    diff = bench.paired_difference(a, b)
    expected = stats.ttest_rel([0.90, 0.92, 0.91, 0.95, 0.93], [0.89, 0.90, 0.92, 0.91, 0.90]).confidence_interval()
    assert diff["mean"] == pytest.approx(0.018) and diff["n"] == 5
    assert (diff["lo"], diff["hi"]) == pytest.approx((expected.low, expected.high))
    assert bench.paired_difference(a[:1], b) is None  # one shared seed gives no interval


def test_gap_closure_is_the_share_of_the_gap_to_full_data_with_an_interval():
    full = [_run("full", s, 0.90 + 0.01 * (s % 2), rate=0.0) for s in range(10)]
    random = [_run("random", s, 0.80 + 0.01 * (s % 3)) for s in range(10)]
    half = [_run("m", s, (f["test"]["top1"] + r["test"]["top1"]) / 2) for s, (f, r) in enumerate(zip(full, random))]
    closure = bench.gap_closure(half, random, full)
    assert closure["mean"] == pytest.approx(0.5) and closure["n"] == 10
    assert closure["lo"] <= 0.5 <= closure["hi"] and closure["hi"] - closure["lo"] < 0.1
    same = bench.gap_closure(random, random, full)
    assert same["mean"] == pytest.approx(0.0)


def test_min_detectable_effect_shrinks_with_seeds_and_grows_with_spread():
    def diff(sd, n):
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        return {"mean": 0.0, "lo": -half, "hi": half, "n": n}
    assert bench.min_detectable_effect([diff(0.01, 10)]) < bench.min_detectable_effect([diff(0.01, 5)])
    one = bench.min_detectable_effect([diff(0.01, 10)])
    assert bench.min_detectable_effect([diff(0.02, 10)]) == pytest.approx(2 * one)
    # The usual normal approximation, 2.8 sd / sqrt(n), is a little below the t-based figure.
    assert 2.8 * 0.01 / math.sqrt(10) < bench.min_detectable_effect([diff(0.01, 10)]) < 3.3 * 0.01 / math.sqrt(10)


def test_a_table_is_refused_from_mixed_or_dirty_commits():
    assert bench.one_commit([_run("random", 0, 0.8), _run("rs2", 0, 0.8)]) == "abc"
    for bad in ([_run("random", 0, 0.8), _run("rs2", 0, 0.8, commit="def")],
                [_run("random", 0, 0.8, commit="abc+dirty")],
                [{k: v for k, v in _run("random", 0, 0.8).items() if k != "commit"}]):
        with pytest.raises(bench.MixedCommits, match="one clean commit"):
            bench.summarise(bad, Path("/nonexistent"), ["digits"])


def _floors(regime="digits", value=0.70):
    return [_run("floor", s, value, rate=None, stage="floor", regime=regime) for s in range(bench.FLOOR_SEEDS)]


def _calibrated(regime, epochs, full, random):
    return [_run(m, seed, v, rate=0.0 if m == "full" else 0.9, stage="calibrate", regime=regime, epochs=epochs)
            for seed in bench.CALIBRATION_SEEDS for m, v in (("full", full), ("random", random))]


def test_calibration_takes_the_first_epoch_count_that_clears_both_bars():
    first, second, third = bench.REGIMES["digits"].epochs
    records = _floors()
    assert bench.calibration(records, "digits")[0] is None
    records += _calibrated("digits", first, full=0.92, random=0.90)  # only 0.02 over random
    decided, needed = bench.calibration(records, "digits")
    assert decided is None and {k["epochs"] for k, _ in needed} == {first, second}  # the next one is run
    records += _calibrated("digits", second, full=0.90, random=0.85)
    decided, needed = bench.calibration(records, "digits")
    assert decided["epochs"] == second and decided["meets_bar"] and third not in {k["epochs"] for k, _ in needed}
    records = _floors() + [r for e in (first, second, third) for r in _calibrated("digits", e, 0.90, 0.889 - e / 10000)]
    decided, _ = bench.calibration(records, "digits")
    assert decided["epochs"] == max(first, second, third) and not decided["meets_bar"]  # none does: most headroom


def test_selection_reads_validation_on_unreported_seeds_and_skips_terms_that_repeat_the_loss():
    records = []
    for i, name in enumerate(["random", *bench.EMP_CANDIDATES]):
        rho = -0.95 if name == "emp[entropy]" else 0.2
        for seed in bench.SELECTION_SEEDS:
            run = _run(name, seed, 0.80 + i / 100, stage="select", rho=rho)
            run["validation"] = {"top1": 0.99 if name == "emp[entropy]" else 0.80 + i / 100}
            run["test"] = {"top1": 0.0}  # never read for a choice
            records.append(run)
    chosen = bench.chosen(records, bench.EMP_CANDIDATES, ["digits"])
    assert chosen["method"] == list(bench.EMP_CANDIDATES)[-1]
    assert chosen["validation_gain_over_random"] == pytest.approx(len(bench.EMP_CANDIDATES) / 100)
    assert bench.chosen(records[:-1], bench.EMP_CANDIDATES, ["digits"]) is None  # a seed is missing


class _Data:
    def __init__(self, n):
        self.pool = range(n)


def test_plan_runs_stages_in_order_with_ten_paired_seeds_and_exact_equal_compute():
    data = {"digits": _Data(1347)}
    plan = bench.planned_runs(["digits"], _floors(), data.get)
    assert {k["stage"] for k, _ in plan} == {"calibrate"}
    first = bench.REGIMES["digits"].epochs[0]
    records = _floors() + _calibrated("digits", first, 0.92, 0.85)
    plan = bench.planned_runs(["digits"], records, data.get)
    selection = [k for k, _ in plan if k["stage"] == "select"]
    assert {k["seed"] for k in selection} == set(bench.SELECTION_SEEDS)
    assert not {k["seed"] for k in selection} & set(range(bench.REPORT_SEEDS))  # chosen on seeds never reported
    assert {k["method"] for k in selection} == {"random", *bench.EMP_CANDIDATES, *bench.LOSS_CANDIDATES}
    for key in selection:
        for method in ("random", *bench.EMP_CANDIDATES, *bench.LOSS_CANDIDATES):
            records.append(_run(method, key["seed"], 0.85, stage="select", rho=0.1))
    plan = bench.planned_runs(["digits"], records, data.get)
    report = [(k, o) for k, o in plan if k["stage"] == "report"]
    for method in ("full", "random", "rs2", "full_equal_compute", "emp", "best_loss", "infobatch_published"):
        assert {k["seed"] for k, _ in report if k["method"] == method} == set(range(10)), method
    assert {k["seed"] for k, _ in report if k["requested_rate"] == 0.7} == set(range(5))
    equal = next(o for k, o in report if k["method"] == "full_equal_compute" and k["requested_rate"] == 0.9)
    random_plan = bench.Pruner(1347, first, rate=0.9, selector="random", warmup_epochs=1, anneal=0.0)
    assert f"train.max_forwards={random_plan.planned_forwards()}" in equal
    published = next(o for k, o in report if k["method"] == "infobatch_published")
    assert "pruning.anneal=0.125" in published and not any(o.startswith("pruning.rate") for o in published)


def test_workers_share_one_plan_run_each_planned_run_once_and_wait_for_runs_that_unlock_more(tmp_path):
    """Two workers over one plan whose second stage appears only once the first is recorded (as the benchmark's
    stages wait on their rules): every run is made exactly once, both workers work, and the merge keeps all."""
    import threading

    def plan(records):
        first = [({"regime": "digits", "stage": "select", "method": "m", "requested_rate": 0.9, "seed": s,
                   "epochs": 1}, []) for s in range(4)]
        done = {r["seed"] for r in records if r["stage"] == "select"}
        second = [({**key, "stage": "report", "seed": 10 + key["seed"]}, []) for key, _ in first] if done == {
            0, 1, 2, 3} else []
        return first + second

    made = []

    def run(key, overrides):
        made.append(bench._key(key))
        threading.Event().wait(0.05)  # long enough for the other worker to find every run claimed
        return _run(key["method"], key["seed"], 0.5, stage=key["stage"], epochs=1)

    counts = [0, 0]
    threads = [threading.Thread(target=lambda k=k: counts.__setitem__(k, bench.work(k, tmp_path, plan, run,
                                                                                        wait=0.01)))
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == sorted(set(made)) and len(made) == 8 and min(counts) >= 1
    records = bench.merge_worker_files(tmp_path)
    assert len(records) == 8 and not list(tmp_path.glob(bench.WORKER_FILES)) and not (tmp_path / ".claims").exists()
    assert len((tmp_path / bench.RESULTS_FILE).read_text().splitlines()) == 8


def _committed_summary():
    path = RESULTS / "pruning_quality_summary.json"
    assert path.is_file(), "benchmarks/results/pruning_quality_summary.json is missing: run the benchmark"
    return json.loads(path.read_text())


def test_committed_results_come_from_one_commit_and_rest_on_regimes_with_headroom():
    summary = _committed_summary()
    records = [json.loads(line) for line in (RESULTS / "pruning_quality.jsonl").read_text().splitlines()]
    assert bench.one_commit(records) == summary["commit"]
    if summary["emp_default"]:  # the code's EMP default is the setting the benchmark chose on validation
        chosen = dict(o.split("=") for o in summary["emp_default"]["overrides"])
        assert PruningSettings().memory == chosen["pruning.memory"]
        assert PruningSettings().beta == float(chosen["pruning.beta"])
        assert SCORE_SELECTOR == chosen["pruning.selector"]  # what a named scorer selects with by default
    assert set(summary["regimes"]) == set(bench.REGIMES)
    for regime, s in summary["regimes"].items():
        calibration = s["calibration"]
        if calibration and calibration["meets_bar"]:  # chosen on validation: the bars held there
            tried = next(t for t in calibration["tried"] if t["epochs"] == calibration["epochs"])
            assert tried["full_minus_floor"] >= bench.BAR_FLOOR and tried["full_minus_random"] >= bench.BAR_RANDOM
        if summary["complete"]:
            headline = [r for r in s["rows"] if r["rate"] == bench.HEADLINE_RATE
                        and r["method"] in ("random", "rs2", "full_equal_compute", "emp", "best_loss")]
            assert min(r["n"] for r in headline) >= 10, regime


@pytest.mark.slow
def test_a_recorded_row_reproduces_at_this_checkout():
    records = [json.loads(line) for line in (RESULTS / "pruning_quality.jsonl").read_text().splitlines()]
    runs = [r for r in records if r["regime"] == "digits" and r["stage"] != "floor"]
    assert runs, "no recorded digits run to reproduce"
    record = min(runs, key=lambda r: r["train_seconds"])
    again = bench.rerun(record)
    assert again["sample_forwards"] == record["sample_forwards"]
    assert again["final_loss"] == pytest.approx(record["final_loss"], rel=1e-5)
    assert again["test"]["top1"] == pytest.approx(record["test"]["top1"], abs=1e-6)
    assert again["validation"]["top1"] == pytest.approx(record["validation"]["top1"], abs=1e-6)
