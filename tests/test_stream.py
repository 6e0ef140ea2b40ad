"""data.in_memory=false: a folder of JPEG and PNG files streamed from disk through DataLoader workers."""

import json

import pytest
import torch
from PIL import Image

from ssl_emp.build import pretrain
from ssl_emp.config import load_pretrain_config
from ssl_emp.data import UnreadableImageError
from ssl_emp.data.stream import ImageFolderStream
from ssl_emp.engine import load_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """scikit-learn's digits as a real image folder: train/<class>/*.jpg|png (24 px RGB), test/ likewise."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("folder")
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        split = "train" if i < 600 else "test" if i < 800 else None
        if split is None:
            break
        (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray((image * 255 / 16).astype("uint8")).resize((24, 24)).convert("RGB")
        picture.save(root / split / str(label) / (f"{i:04d}.jpg" if i % 2 else f"{i:04d}.png"))
    return root


def _cfg(folder, tmp_path, name, *extra, pruning=("pruning.rate=0.3", "pruning.anneal=0")):
    return load_pretrain_config(
        "configs/default.yaml",
        [
            "data.name=imagefolder",
            f"data.root={folder}",
            "data.image_size=16",
            "model.width=8",
            "model.proj_hidden_dim=32",
            "model.proj_output_dim=16",
            "train.batch_size=100",
            "train.epochs=3",
            "train.checkpoint_every=1",
            "tracking.wandb=disabled",
            "monitor.every=0",
            *pruning,
            f"run.out_dir={tmp_path}",
            f"run.name={name}",
            *extra,
        ],
    )


def test_stream_reads_what_the_in_memory_loader_reads(folder):
    from ssl_emp.data import load_bank

    stream = ImageFolderStream(str(folder), 16)
    bank = load_bank("imagefolder", str(folder), "train", 16)
    assert len(stream) == len(bank) == 600 and stream.num_classes == bank.num_classes == 10
    for i in (0, 1, 299, 599):  # PNG and JPEG files alike
        assert torch.equal(stream[i][1], bank.images[i]) and stream.labels[i] == bank.labels[i]
    subset = load_bank("imagefolder", str(folder), "train", 16, subset=50)
    assert len(subset) == 50 and len(ImageFolderStream(str(folder), 16, subset=50)) == 50


@pytest.mark.slow
@pytest.mark.kernels("two input paths give bit-equal batches and so the same float ops")
def test_streamed_run_trains_as_the_same_run_from_memory(folder, tmp_path):
    """Same plans, same images, same augmentation stream: the epoch losses agree, and so does the pruning."""
    memory = pretrain(_cfg(folder, tmp_path, "memory"), show_progress=False)
    streamed = pretrain(
        _cfg(folder, tmp_path, "streamed", "data.in_memory=false", "data.workers=2"), show_progress=False
    )
    for a, b in zip(memory.history, streamed.history, strict=True):
        assert b["train/epoch_loss"] == pytest.approx(a["train/epoch_loss"], rel=1e-4)
        assert b["pruning/epoch_kept"] == a["pruning/epoch_kept"]
    assert streamed.achieved_rate == pytest.approx(0.3, abs=0.005)
    assert load_checkpoint(streamed.checkpoint)["data"]["num_classes"] == streamed.num_classes == 10


@pytest.mark.slow
def test_an_unreadable_file_stops_the_run_naming_it_and_the_checkpoint_survives(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    overrides = ("data.in_memory=false", "data.workers=1", "data.skip_unreadable=false", "train.epochs=2")
    pretrain(_cfg(copy, tmp_path, "run", *overrides), show_progress=False)
    broken = next((copy / "train" / "3").glob("*.jpg"))
    broken.write_bytes(b"this is not a JPEG")  # the same files, one of them now unreadable
    with pytest.raises(UnreadableImageError) as error:
        pretrain(
            _cfg(copy, tmp_path, "run", *overrides[:3], "train.epochs=4", "run.resume=true", "run.extend=true"),
            show_progress=False,
        )
    message = str(error.value)
    assert str(broken) in message and "is intact" in message
    assert "data.skip_unreadable=true" in message and "Traceback" not in message
    stopped_in = int(message.split("stopped in epoch ")[1].split(";")[0])  # 3, or 4 if epoch 3 pruned the file
    assert stopped_in in (3, 4)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == stopped_in - 1


@pytest.mark.slow
def test_skipping_unreadable_files_counts_them_and_trains_the_rest(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    next((copy / "train" / "5").glob("*.png")).write_bytes(b"")
    result = pretrain(
        _cfg(copy, tmp_path, "skip", "data.in_memory=false", "data.workers=1", "data.skip_unreadable=true", pruning=()),
        show_progress=False,
    )
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    counts = [r["data/unreadable_files"] for r in records if "data/unreadable_files" in r]
    assert counts and counts[-1] == 1
    visits = load_checkpoint(result.checkpoint)["pruning"]["table"]["visits"]
    # Every planned forward trained, except the broken file's own, once per epoch (nothing is pruned)...
    assert result.full_data_forwards - result.sample_forwards == result.unreadable_skips == 3
    assert int(visits.sum()) == result.sample_forwards and records[-1]["data/unreadable_skips"] == 3
    # ... and those skips are not pruning: at rate 0 the achieved rate is 0 (it read 0.005 here).
    assert result.achieved_rate == 0 and all(r["pruning/achieved_rate"] == 0 for r in result.history)
    # The learning-rate schedule still ends where it should (cosine to 0): the skipped forwards count as spent...
    assert [r["train/lr"] for r in records if "train/samples_seen" in r][-1] == pytest.approx(0.0, abs=1e-12)
    # ... and so does a compute budget: it ends inside epoch 2, having spent exactly what it was given.
    budget = pretrain(
        _cfg(
            copy,
            tmp_path,
            "budget",
            "data.in_memory=false",
            "data.workers=1",
            "data.skip_unreadable=true",
            "train.max_forwards=1000",
            pruning=(),
        ),
        show_progress=False,
    )
    assert budget.epochs_done == 2 and budget.sample_forwards + budget.unreadable_skips == 1000


def test_streaming_is_refused_where_it_cannot_apply(folder, tmp_path):
    from ssl_emp.config import ConfigError

    with pytest.raises(ConfigError, match="streams image files from a folder"):
        load_pretrain_config("configs/default.yaml", ["data.in_memory=false"])
    with pytest.raises(ValueError, match="monitor.train_subset"):
        pretrain(_cfg(folder, tmp_path, "monitored", "data.in_memory=false", "monitor.every=1"), show_progress=False)


def _ddp_stream_worker(rank, world_size, port, folder, out_dir):
    import os

    from ssl_emp.engine.trainer import Pretrainer

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    read = []  # the files this rank decoded for training (data.workers=0: in this process), in order
    original_getitem, original_run = ImageFolderStream.__getitem__, Pretrainer.run
    final = {}

    def recording_getitem(self, index):
        read.append(index)
        return original_getitem(self, index)

    def recording_run(self, tracker, show_progress=None):
        read.clear()  # leave out the channel statistics' sample, read before training
        result = original_run(self, tracker, show_progress)
        final["table"] = self.parts.pruner.table.state_dict()
        return result

    ImageFolderStream.__getitem__, Pretrainer.run = recording_getitem, recording_run
    try:
        result = pretrain(
            _cfg(folder, out_dir, "ddp", "data.in_memory=false", "data.workers=0", "train.device=cpu"),
            show_progress=False,
        )
    finally:
        ImageFolderStream.__getitem__, Pretrainer.run = original_getitem, original_run
    torch.save(
        {
            "table": final["table"],
            "forwards": result.sample_forwards,
            "rate": result.achieved_rate,
            "read": torch.tensor(read),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


@pytest.mark.slow
def test_two_ranks_stream_their_shards_and_keep_identical_tables(folder, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_stream_worker, args=(2, port, str(folder), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key, value in r0["table"].items():
        torch.testing.assert_close(value, r1["table"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert r0["forwards"] == r1["forwards"] == int(r0["table"]["visits"].sum())
    assert r0["rate"] == pytest.approx(0.3, abs=0.005)
    # Each rank decoded only its shards: together, exactly the planned forwards, about half each.
    assert len(r0["read"]) + len(r1["read"]) == r0["forwards"]
    assert abs(len(r0["read"]) - len(r1["read"])) <= 6


def _unlabelled(root, layout):
    """The digits as an unlabelled folder of JPEG and PNG files: flat (root/*.jpg|png), nested without classes
    (root/<year>/<month>/...), or flat under train/; with a hidden file and a text file that are not images."""
    from sklearn.datasets import load_digits

    for i, image in enumerate(load_digits().images[:120]):
        where = {"flat": root, "nested": root / f"20{20 + i % 3}" / f"{i % 2:02d}", "train": root / "train"}[layout]
        where.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray((image * 255 / 16).astype("uint8")).resize((24, 24)).convert("RGB")
        picture.save(where / (f"{i:04d}.JPG" if i % 2 else f"{i:04d}.png"))
    (root / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(root / ".thumbnail.png")
    return root


@pytest.mark.parametrize("layout", ["flat", "nested", "train"])
def test_an_unlabelled_folder_loads_in_memory_and_streamed(layout, tmp_path):
    from ssl_emp.data import load_bank

    root = _unlabelled(tmp_path / layout, layout)
    bank = load_bank("imagefolder", str(root), "train", 16)
    stream = ImageFolderStream(str(root), 16)
    assert len(bank) == len(stream) == 120 and bank.num_classes == stream.num_classes == 0
    assert (bank.labels == -1).all() and (stream.labels == -1).all()
    for i in (0, 1, 119):  # PNG and JPEG files alike, in the same order
        assert torch.equal(stream[i][1], bank.images[i])


def test_after_pretraining_on_an_unlabelled_folder_the_next_step_is_a_labelled_probe_or_an_export(tmp_path):
    from ssl_emp import commands
    from ssl_emp.pretrain import next_step

    python = commands.python()  # this interpreter, as the shell can run it (.venv/bin/python after make setup)
    assert next_step(tmp_path / "l", 10) == f"{python} -m eval.linear_probe --checkpoint {tmp_path / 'l'}"
    lines = next_step(tmp_path / "u", 0).splitlines()  # the reason, then one command a line, to paste as it is
    assert "no labels" in lines[0] and len(lines) == 3
    assert lines[1].split() == [
        python,
        "-m",
        "eval.linear_probe",
        "--checkpoint",
        str(tmp_path / "u"),
        "--dataset",
        "imagefolder",
        "--data-root",
        "LABELLED_FOLDER",
    ]
    assert lines[2].split()[:3] == [python, "-m", "ssl_emp.export"]


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True])
def test_pretraining_on_an_unlabelled_folder_runs_and_evaluation_says_it_needs_labels(streamed, tmp_path):
    from eval.linear_probe import main as probe_main

    root = _unlabelled(tmp_path / "photos", "nested")
    extra = ["data.in_memory=false", "data.workers=1"] if streamed else []
    result = pretrain(_cfg(root, tmp_path, "unlabelled", "train.batch_size=32", *extra), show_progress=False)
    assert result.epochs_done == 3 and result.achieved_rate == pytest.approx(0.3, abs=0.01)
    assert load_checkpoint(result.checkpoint)["data"]["num_classes"] == result.num_classes == 0

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert probe_main(["--checkpoint", str(result.run_dir)]) == 2
    assert err.getvalue().startswith("error: Evaluation needs labelled images") and err.getvalue().count("\n") == 1
    # The online monitor has nothing to classify there: it is off, with a note, and the run trains.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        monitored = pretrain(
            _cfg(
                root,
                tmp_path,
                "monitored",
                "train.batch_size=32",
                "monitor.every=1",
                *extra,
                "monitor.train_subset=50",
                "monitor.test_subset=50",
            ),
            show_progress=False,
        )
    assert monitored.epochs_done == 3 and not any("monitor/knn_top1" in r for r in monitored.history)
    assert "note: monitor.every=1 is off" in err.getvalue() and "no labels" in err.getvalue()
