"""The prepared GPU check and the throughput benchmark it runs: ``benchmarks/gpu_check.sh --tiny`` is their CPU mode,
run here so that neither rots between the GPU sessions that run them in full."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PHASES = {"ssl_emp.views", "ssl_emp.forward_backward", "ssl_emp.optimizer", "ssl_emp.pruning_observe"}


def _load_common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_common_names_devices_phases_and_the_failing_call():
    common = _load_common()
    assert set(common.PHASES) == PHASES
    assert common.slug("NVIDIA H200") == "nvidia-h200" and common.slug("cpu") == "cpu"
    bank = common.synthetic_bank(4, 8)
    assert bank.images.dtype == torch.uint8 and tuple(bank.images.shape) == (4, 3, 8, 8)
    with pytest.raises(ValueError) as raised:  # raised inside ssl_emp: the project's file and line are named
        type(bank)(bank.images.float(), bank.labels, 10, "bad")
    assert "ssl_emp/data/bank.py:" in common.failing_call(raised.value)


@pytest.mark.slow
def test_device_check_tiny_runs_the_throughput_benchmark_and_reports_every_figure(tmp_path):
    # (No 'gpu' or 'cuda' in this name: the check selects the GPU-only tests by those words.)
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--tiny", "--results", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    printed = done.stdout
    assert done.returncode == 0, printed[-4000:] + done.stderr[-4000:]
    assert "all present: nothing to install" in printed  # the venv has every package the GPU image may lack
    assert "test(s) selected for the GPU run" in printed and "0 test(s)" not in printed
    assert printed.count("host syncs skipped: no CUDA") == 2 and "(skipped on the CPU)" in printed
    assert "gpu_check: all stages passed" in printed
    scale = json.loads((tmp_path / "selection_scale_cpu.json").read_text())
    assert {(r["n"], r["path"]) for r in scale["rows"]} == {(10_000, "exact"), (10_000, "scale")}
    assert (tmp_path / "selection_scale_cpu.png").stat().st_size > 0

    stem = tmp_path / "throughput_cpu-tiny"
    written = json.loads(stem.with_suffix(".json").read_text())
    records = {r["method"]: r for r in written["records"]}
    assert set(records) == {"simclr", "moco"}
    for record in records.values():
        assert record["samples_per_second"] > 0 and record["model_tflops_per_step"] > 0
        # The step split comes from the trainer's record_function ranges, CPU time on the CPU.
        assert record["step_split_clock"] == "host" and set(record["step_split_seconds"]) == PHASES
        assert all(seconds > 0 for seconds in record["step_split_seconds"].values())
        assert 0 < record["observe_seconds"] and 0 < record["observe_share_of_step"] < 1
        # A pruned epoch at keep 0.3 trains 0.3 of the samples. (Its time ratio is only checked to be there: a few
        # steps on a shared CPU are too noisy to bound.)
        assert record["pruned_epoch_images"] == round(0.3 * record["images"])
        assert record["pruned_over_full_epoch"] > 0 and record["pruned_over_same_size_random_epoch"] > 0
        assert record["mfu"] is None and record["host_syncs"] == "skipped: no CUDA"
        assert record["lightly_samples_per_second"] > 0 and record["over_lightly"] > 0
    paths = written["data_paths"]
    assert paths["images"] == 128 and paths["in_memory_samples_per_second"] > 0
    assert paths["streamed_samples_per_second"] > 0
    table = stem.with_suffix(".md").read_text()
    assert "--tiny" in table and table.count("| small_cnn |") == 2 and "streamed / in memory" in table
