"""The prepared GPU science experiment in its CPU mode: ``benchmarks/gpu_science.sh --tiny`` runs every method end
to end and writes the records the GPU run will, so the script cannot rot before a GPU is lent. (No 'gpu' or 'cuda'
in these names: the GPU check runs the tests that carry those words on the device machine.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_science_experiment_tiny_runs_every_method_and_records_commit_device_and_compute(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHON": sys.executable}
    done = subprocess.run(
        [
            "bash",
            "benchmarks/gpu_science.sh",
            "--tiny",
            "--results",
            str(tmp_path),
            "--",
            "--epochs",
            "4",
            "--probe-epochs",
            "5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "gpu_science.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["random", "oracle", "full_equal_compute", "emp", "coverage"]
    for r in records:
        assert r["commit"] and r["device"] == "cpu" and r["torch"] and r["dataset"] == "digits"
        assert r["achieved_rate"] == pytest.approx(0.7, abs=0.01) and 0 < r["test"]["top1"] <= 1
    by = {r["method"]: r for r in records}
    assert by["coverage"]["embedding_forwards"] == 1347 and by["random"]["embedding_forwards"] == 0
    assert by["full_equal_compute"]["sample_forwards"] == by["random"]["sample_forwards"]  # equal compute, exactly
    assert by["oracle"]["class_forward_spread"] < by["random"]["class_forward_spread"]  # it evens out the classes
    # Run again: the finished runs are kept, nothing is re-run.
    again = subprocess.run(
        [
            "bash",
            "benchmarks/gpu_science.sh",
            "--tiny",
            "--results",
            str(tmp_path),
            "--",
            "--epochs",
            "4",
            "--probe-epochs",
            "5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert again.returncode == 0 and "done already" in again.stdout
    assert len((tmp_path / "gpu_science.jsonl").read_text().splitlines()) == 5


def test_the_science_experiment_refuses_a_machine_without_the_accelerator_unless_tiny():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_science.sh", "--", "--minutes", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1 and "no CUDA device here" in done.stderr and "Traceback" not in done.stderr
