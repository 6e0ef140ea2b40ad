"""``ssl-emp-embed RUN``: the embeddings, their CSV and a map coloured by what the pruner did, from a pruned run on a
folder the test writes."""

import csv

import numpy as np
import pytest
from PIL import Image


@pytest.mark.slow
def test_a_pruned_folder_run_is_embedded_written_and_mapped_by_what_the_pruner_did(tmp_path, capsys):
    from safetensors.torch import load_file

    from eval.embed import main
    from ssl_emp.pretrain import main as pretrain

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "!broken.png").write_bytes(b"")  # sorts first: the paths must skip it, not shift
    run = tmp_path / "runs" / "r"
    args = [
        "--data",
        str(folder),
        "model.width=8",
        "train.batch_size=32",
        "train.epochs=3",
        "pruning.rate=0.3",
        "pruning.anneal=0",
    ]
    assert pretrain([*args, f"run.out_dir={run.parent}", "run.name=r"]) == 0
    capsys.readouterr()
    assert main([str(run), "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    assert "120 embeddings" in printed and "coloured by cluster, visits, final score, kept in the last epoch" in printed
    saved = load_file(str(run / "embed" / "embeddings.safetensors"))
    assert saved["embeddings"].shape[0] == 120 and saved["index"].tolist() == list(range(120))
    rows = list(csv.DictReader(open(run / "embed" / "embeddings.csv")))
    assert len(rows) == 120 and rows[5]["path"].endswith("005.png")  # the broken file left out, the order kept
    kept = [int(r["kept in the last epoch"]) for r in rows]
    assert 0 < sum(kept) < 120  # a pruned epoch: some kept, some skipped
    assert (run / "embed" / "map.png").stat().st_size > 1000


def test_the_map_knows_which_epochs_were_pruned_from_the_saved_config():
    """After full-data annealing epochs every image was trained last epoch; the map then shows which images any
    pruned epoch kept, and needs the pruned epochs for that (from the schedule alone: no selector is built)."""
    from eval.embed import pruned_epochs

    config = {"pruning": {"rate": 0.7, "selector": "prior", "prior_file": "gone.txt"}, "train": {"epochs": 8}}
    assert pruned_epochs(config, 8) == [1, 2, 3, 4, 5, 6]  # warm-up epoch 0, annealing epoch 7
    assert pruned_epochs(config, 4) == [1, 2, 3]  # a run stopped early
    assert pruned_epochs({"pruning": {"rate": 0.0}, "train": {"epochs": 8}}, 8) == []
    published = {"pruning": {"rate": 0.0, "selector": "infobatch", "infobatch_r": 0.5}, "train": {"epochs": 8}}
    assert pruned_epochs(published, 8) == [1, 2, 3, 4, 5, 6]  # InfoBatch's own rule prunes with no rate set
