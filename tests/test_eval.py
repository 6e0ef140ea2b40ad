import json

import pytest
import torch
import torch.nn.functional as F

from eval.finetune import finetune
from eval.finetune import main as finetune_main
from eval.knn import knn_eval
from eval.knn import main as knn_main
from eval.linear_probe import main as probe_main
from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.evaluation import knn_accuracy, knn_rankings
from ssl_emp.pruning import Pruner, SampleStats
from ssl_emp.pruning.scorers import supervised_emp_score


def test_knn_votes_are_weighted_by_similarity():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    train_y = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert knn_rankings(train_x, train_y, query, num_classes=2, k=3, temperature=0.1)[:, 0].tolist() == [0, 1]
    # With k=1 only the nearest neighbour votes, whatever the temperature.
    assert knn_rankings(train_x, train_y, query, 2, k=1, temperature=100.0)[:, 0].tolist() == [0, 1]


def test_knn_matches_a_brute_force_weighted_vote():
    torch.manual_seed(0)
    train_x, train_y = torch.randn(50, 6), torch.randint(0, 4, (50,))
    query = torch.randn(7, 6)
    sims = F.normalize(query, dim=1) @ F.normalize(train_x, dim=1).T
    top = sims.topk(10, dim=1)
    votes = torch.zeros(7, 4).scatter_add_(1, train_y[top.indices], (top.values / 0.1).exp())
    ranked = knn_rankings(train_x, train_y, query, 4, k=10, temperature=0.1, chunk=3)
    assert torch.equal(ranked[:, 0], votes.argmax(dim=1))


def test_knn_rejects_bad_parameters():
    with pytest.raises(ValueError, match="k >= 1"):
        knn_accuracy(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.randn(2, 2), torch.zeros(2), 2, k=0)


def test_three_evaluations_run_on_the_same_checkpoint(tiny_run, capsys):
    for command, name in ((probe_main, "linear_probe"), (knn_main, "knn"), (finetune_main, "finetune")):
        extra = ["--epochs", "2"] if name != "knn" else []
        assert command(["--checkpoint", str(tiny_run), "--no-wandb", *extra]) == 0
        result = json.loads((tiny_run / "eval" / f"{name}.json").read_text())
        assert result["test_images"] == 450 and 0.1 < result["top1"] <= 1.0, (name, result)
    assert "kNN (k=200" in capsys.readouterr().out


def test_knn_of_a_trained_backbone_beats_chance_and_reports_top5(tiny_run):
    result = knn_eval(str(tiny_run), k=20)
    assert result["top1"] > 0.3 and result["top5"] >= result["top1"] and result["knn"] == {"k": 20, "temperature": 0.1}


def test_finetune_prunes_its_data_at_the_requested_rate(tiny_run):
    result = finetune(str(tiny_run), epochs=8, prune_rate=0.5, batch_size=128, show_progress=False)
    assert result["pruning/achieved_rate"] == pytest.approx(0.5, abs=0.01)
    assert result["pruning/sample_forwards"] == pytest.approx(0.5 * 8 * 1347, rel=0.02)
    assert result["top1"] > 0.3


def test_finetune_explains_an_unreachable_rate(tiny_run):
    with pytest.raises(ValueError, match="cannot be reached"):
        finetune(str(tiny_run), epochs=2, prune_rate=0.9)


def test_supervised_output_makes_emp_the_papers_supervised_score():
    torch.manual_seed(0)
    logits, labels = torch.randn(10, 5), torch.randint(0, 5, (10,))
    pruner = Pruner(10, 4, scorer="emp", memory="entropy", beta=0.7, normalize="none")
    pruner.observe(torch.arange(10), SampleStats.from_logits(logits, labels), epoch=0)
    assert torch.allclose(pruner.table.scores, supervised_emp_score(logits, labels, beta=0.7), atol=1e-6)


def test_online_monitor_logs_knn_and_does_not_change_training(tiny_overrides, tmp_path):
    plain = pretrain(
        load_pretrain_config("configs/default.yaml", [*tiny_overrides, "monitor.every=0", "run.name=plain"]),
        show_progress=False,
    )
    watched = pretrain(
        load_pretrain_config(
            "configs/default.yaml", [*tiny_overrides, "monitor.every=1", "monitor.k=20", "run.name=watched"]
        ),
        show_progress=False,
    )
    assert [r["train/epoch_loss"] for r in watched.history] == [r["train/epoch_loss"] for r in plain.history]
    assert all(0.0 < r["monitor/knn_top1"] <= 1.0 for r in watched.history)
    assert all("monitor/knn_top1" not in r for r in plain.history)
    logged = [json.loads(line) for line in (watched.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum("monitor/knn_top1" in r and "pruning/sample_forwards" in r for r in logged) == 2


def _digits_as_cifar10(root):
    """scikit-learn's digits written in CIFAR-10's real on-disk format (python pickles, 3 x 32 x 32): another
    dataset, of another shape, with the same classes, so transfer has something to find."""
    import pickle

    import numpy as np
    import torchvision.transforms.v2.functional as TF

    from ssl_emp.data import load_bank

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        bank = load_bank("digits", None, split)
        images = TF.resize(bank.images, [32, 32], antialias=True).expand(-1, 3, -1, -1)
        rows = images.reshape(len(bank), -1).numpy().astype(np.uint8)
        for part, name in zip(np.array_split(np.arange(len(bank)), len(names)), names):
            entry = {"data": rows[part], "labels": bank.labels[part].tolist()}
            (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


def test_linear_probe_transfers_a_digits_backbone_to_another_dataset(tiny_run, tmp_path, capsys):
    """Pretrained on digits (1 x 8 x 8), probed on a CIFAR-10-format set (3 x 32 x 32): channels and size are
    adapted to the backbone, the record says how, and the probe finds the digits."""
    _digits_as_cifar10(tmp_path / "cifar")
    output = tmp_path / "transfer.json"
    assert (
        probe_main(
            [
                "--checkpoint",
                str(tiny_run),
                "--dataset",
                "cifar10",
                "--data-root",
                str(tmp_path / "cifar"),
                "--epochs",
                "30",
                "--no-wandb",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert "pretrained on digits" in capsys.readouterr().out
    result = json.loads(output.read_text())
    assert result["dataset"] == "cifar10" and result["pretrained_on"] == "digits"
    assert result["adapted"]["channels"] == "3 -> 1 (ITU-R 601 luma)"
    assert result["adapted"]["image_size"].startswith("32 -> 8")
    assert result["train_images"] == 1347 and result["test_images"] == 450
    assert result["top1"] > 0.5  # far above chance (0.1): the adapted images are the digits again


def test_each_evaluation_is_a_python_function_returning_its_record(tiny_run):
    from eval import finetune as finetune_module
    from eval import knn, linear_probe

    probe = linear_probe.run(tiny_run, epochs=2, batch_size=64, show_progress=False)
    assert probe["probe"]["batch_size"] == 64 and probe["test_images"] == 450
    assert knn.run(tiny_run, k=5, batch_size=100, show_progress=False)["knn"] == {"k": 5, "temperature": 0.1}
    assert finetune_module.run(tiny_run, epochs=1, show_progress=False)["finetune"]["epochs"] == 1


def test_finetune_shrinks_a_batch_larger_than_its_data_with_a_note(tiny_run, capsys, tmp_path):
    assert (
        finetune_main(
            [
                "--checkpoint",
                str(tiny_run),
                "--no-wandb",
                "--epochs",
                "1",
                "--train-subset",
                "200",
                "--output",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    assert "--batch-size 256 is more than the 200 images there are; using 200" in capsys.readouterr().err
    assert json.loads((tmp_path / "out.json").read_text())["finetune"]["batch_size"] == 200


@pytest.mark.parametrize("command", [probe_main, knn_main, finetune_main], ids=["probe", "knn", "finetune"])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(command, capsys):
    assert command(["--checkpoint", "README.md", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'README.md' is not a checkpoint" in err and "weights_only" not in err


def test_evaluations_print_progress_lines_when_output_is_not_a_terminal(tiny_run, capsys, tmp_path):
    """The probe, kNN and fine-tuning say what they are doing in a log file, not only at the end."""
    assert (
        probe_main(["--checkpoint", str(tiny_run), "--no-wandb", "--epochs", "2", "--output", str(tmp_path / "p.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "train features: 1347 images  elapsed" in out and "test features: 450 images" in out
    assert "classifier: 2 epochs over 1347 features" in out
    assert (
        finetune_main(
            ["--checkpoint", str(tiny_run), "--no-wandb", "--epochs", "2", "--output", str(tmp_path / "f.json")]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fine-tune epoch")]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"] and all("eta" in line for line in lines)
