"""benchmarks/throughput.py --tiny: the CPU mode of the throughput benchmark runs and reports every figure."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import throughput  # noqa: E402


@pytest.mark.slow
def test_tiny_mode_reports_throughput_split_pruning_ratio_and_lightly_ratio(tmp_path, capsys):
    stem = tmp_path / "throughput_cpu"
    assert throughput.main(["--tiny", "--images", "256", "--batch-size", "64", "--steps", "2", "--repeats", "1",
                            "--warmup", "1", "--epoch-repeats", "1", "--workers", "1", "--stream-images", "128",
                            "--out", str(stem)]) == 0
    printed = capsys.readouterr().out
    assert "x lightly" in printed and "pruned/full epoch" in printed
    written = json.loads(stem.with_suffix(".json").read_text())
    records = {r["method"]: r for r in written["records"]}
    paths = written["data_paths"]
    assert paths["images"] == 128 and paths["in_memory_samples_per_second"] > 0
    assert paths["streamed_samples_per_second"] > 0 and "streamed / in memory" in stem.with_suffix(".md").read_text()
    assert set(records) == {"simclr", "moco"}
    for record in records.values():
        assert record["samples_per_second"] > 0 and record["model_tflops_per_step"] > 0
        assert set(record["step_split_seconds"]) == {"gather+augment", "forward+backward", "optimizer",
                                                     "pruning observe"}
        assert all(seconds > 0 for seconds in record["step_split_seconds"].values())
        # A pruned epoch at keep 0.3 trains 0.3 of the steps, so it must take clearly less than a full one.
        assert 0 < record["pruned_over_full_epoch"] < 0.8
        assert record["mfu"] is None and record["host_syncs_per_step"] == "n/a on cpu"
    assert records["simclr"]["lightly_samples_per_second"] > 0 and "over_lightly" not in records["moco"]
    table = stem.with_suffix(".md").read_text()
    assert "--tiny" in table and table.count("| small_cnn |") == 2
