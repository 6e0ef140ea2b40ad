"""``ssl-emp-audit`` on folders the test writes, in the README's two-command setup: it makes its short pretraining,
reports what was planted, writes its report and the curation weights, and a pruned run reads those weights."""

import json

import numpy as np
import pytest
from PIL import Image

from ssl_emp.audit import main

pytestmark = pytest.mark.slow


def _digits_folder(folder, copies: int = 0, bad: int = 0):
    """scikit-learn's digits as 16 px PNGs: 400 distinct images, then ``copies`` exact copies of the first ones,
    and ``bad`` files that cannot be decoded."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True)
    images = load_digits().images[:400]
    for i in range(400 + copies):
        pixels = (images[i % 400] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16), Image.NEAREST).save(folder / f"{i:04d}.png")
    for i in range(bad):
        (folder / f"broken{i}.png").write_bytes(b"")
    return folder


def test_the_audit_finds_planted_copies_writes_its_report_and_weights_a_pruned_run_reads(tmp_path, capsys):
    from ssl_emp.pretrain import main as pretrain_main

    folder = _digits_folder(tmp_path / "copied", copies=172, bad=2)  # 172 of 572 readable: 30% exact copies
    out, weights = tmp_path / "audit", tmp_path / "weights.txt"
    code = main([str(folder), "--pretrain-epochs", "4", "--out", str(out), "--write-weights", str(weights)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "no --checkpoint: pretraining 4 epochs" in printed and "2 files left out" in printed
    found = json.loads((out / "audit.json").read_text())
    assert found["num_samples"] == 572 and found["exact_copy_share"] == pytest.approx(172 / 572, abs=1e-9)
    assert found["effective_size"] == 400 and found["copy_groups"] == 172 and found["recommendation"] == "deduplicate"
    assert (out / "audit.html").is_file() and (out / "copy_groups.png").is_file() and (out / "clusters.png").is_file()
    assert len(weights.read_text().split()) == 572
    # Curate, then prune: the weights index the same images, in the same order, as a run on the folder.
    code = pretrain_main(
        [
            "--data",
            str(folder),
            "train.epochs=3",
            "train.batch_size=64",
            "pruning.selector=prior",
            f"pruning.prior_file={weights}",
            "pruning.rate=0.5",
            f"run.out_dir={tmp_path / 'runs'}",
            "run.name=curated",
        ]
    )
    assert code == 0, capsys.readouterr().err
