"""What a new user met running the README on a folder of their own (issue 31's first-run findings), each with a
test that failed before it was fixed: bad files stop nothing and are listed, messages keep their useful end, the
commands a run prints run as printed, a finished run resumed again says so and adds no W&B run, a probe below its
floor says so, and loading a folder writes no carriage returns into a log."""

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_emp import commands
from ssl_emp.data import UnreadableImageError, load_bank
from ssl_emp.data.datasets import decode_square
from ssl_emp.pretrain import main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "train.batch_size=32"]


def _folder_with_bad_files(folder: Path, good: int = 40) -> tuple[Path, list[Path]]:
    """``good`` random 16 px PNGs, and three files that cannot be decoded: empty, truncated, and not an image."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(png, "PNG")
    bad = [folder / "empty.png", folder / "truncated.png", folder / "notes.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    bad[2].write_bytes(b"these are my notes, not a picture " * 8)
    return folder, bad


def _reason(path: Path) -> str:
    with pytest.raises(UnreadableImageError) as error:
        decode_square(str(path), 16)
    return str(error.value)


def test_a_decoders_message_keeps_its_useful_end_without_the_source_location(tmp_path):
    _, (empty, truncated, notes) = _folder_with_bad_files(tmp_path / "bad", good=0)
    for path in (empty, truncated, notes):
        message = _reason(path)
        assert message.startswith(f"Cannot read image '{path}': ")
        assert ".cpp" not in message and "operator()" not in message and "/__w/" not in message
    assert _reason(empty).endswith("Expected a non empty file")
    assert _reason(truncated).endswith("Probably, the input image is corrupted")  # cut at 'cor' before
    assert _reason(notes).endswith("directly.")  # 180 characters: kept whole


def test_a_folder_with_bad_files_trains_in_memory_and_lists_them_in_the_run_folder(tmp_path, capsys):
    folder, bad = _folder_with_bad_files(tmp_path / "mine")
    out = tmp_path / "runs"
    code = main(["--data", str(folder), *FAST, "train.epochs=2", f"run.out_dir={out}", "run.name=mine"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    listed = (out / "mine" / "unreadable_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(str(p) for p in bad)
    assert all(line.split("\t")[1] for line in listed)  # each with the decoder's reason
    assert "3 image files could not be read and are left out" in captured.err
    assert f"3 image files left out, listed in {out / 'mine' / 'unreadable_files.txt'}" in captured.out
    assert "40 of 40" in captured.out or "kept 40/40" in captured.out  # the 40 readable images trained
    # Asked to stop at the first instead, it does, naming it.
    refused = main(["--data", str(folder), *FAST, "data.skip_unreadable=false", f"run.out_dir={out}", "run.name=x"])
    assert refused == 2 and "Cannot read image" in capsys.readouterr().err


def test_loading_a_folder_writes_no_carriage_returns_into_a_log(tmp_path, capfd):
    folder, bad = _folder_with_bad_files(tmp_path / "mine")
    bank = load_bank("imagefolder", str(folder), "train", 16, skip_unreadable=True)
    assert len(bank) == 40 and sorted(path for path, _ in bank.unreadable) == sorted(map(str, bad))
    assert "\r" not in capfd.readouterr().err  # stderr is a file here, as under nohup or SLURM


def test_the_commands_a_run_prints_run_as_printed_with_this_interpreter(tmp_path):
    from ssl_emp.engine import RunInterrupted

    hint = str(RunInterrupted(signal.SIGTERM, 3, 30, tmp_path / "run"))
    printed = hint.split("resume with: ")[1]
    assert printed.startswith(f"{commands.python()} -m ssl_emp.pretrain --resume ")
    # The interpreter it names, typed into a shell in the project folder, is this one (with torch), whatever
    # `python` on the PATH is.
    done = subprocess.run(
        f"{commands.python()} -c 'import sys, torch; print(sys.executable)'",
        shell=True,
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert os.path.abspath(done.stdout.strip()) == os.path.abspath(sys.executable)


def test_the_sync_hint_covers_every_offline_folder_of_the_run(tmp_path):
    from ssl_emp.tracking import sync_command

    wandb_dir = tmp_path / "wandb"
    for name in ("offline-run-20261207_100000-abc123", "offline-run-20261206_090000-abc123", "run-x-other9"):
        (wandb_dir / name).mkdir(parents=True)
    command = sync_command(wandb_dir, "abc123")
    first, second = (str(wandb_dir / f"offline-run-2026120{d}-abc123") for d in ("6_090000", "7_100000"))
    assert command == f"{commands.python()} -m wandb sync {first} {second}"


def test_a_finished_run_resumed_with_auto_says_so_and_adds_no_wandb_run(tmp_path, capsys):
    out = tmp_path / "runs"
    args = [*FAST, "train.epochs=1", "monitor.every=0", "tracking.wandb=offline", f"run.out_dir={out}", "run.name=r"]
    assert main([*args, "run.resume=auto"]) == 0
    capsys.readouterr()
    folders = sorted((out / "r" / "wandb").glob("offline-run-*"))
    metrics = (out / "r" / "metrics.jsonl").read_text()
    assert main([*args, "run.resume=auto"]) == 0
    printed = capsys.readouterr().out
    assert "Already finished" in printed and "nothing was trained" in printed and "loss nan" not in printed
    assert sorted((out / "r" / "wandb").glob("offline-run-*")) == folders and len(folders) == 1
    assert (out / "r" / "metrics.jsonl").read_text() == metrics


def test_a_probe_below_its_random_init_floor_says_so():
    from eval.report import headline

    result = {"dataset": "digits", "pretrained_on": "imagefolder", "backbone": "pretrained (epoch 3)"}
    below = headline("linear probe", {**result, "top1": 0.5222, "random_init_top1": 0.8956})
    above = headline("linear probe", {**result, "top1": 0.95, "random_init_top1": 0.8956})
    assert "no better than the same network untrained" in below and "pretrained on imagefolder" in below
    assert "warning" not in above


def test_a_folder_run_without_a_recipe_uses_the_folder_recipe_and_says_so(tmp_path, capsys):
    import yaml

    folder, _ = _folder_with_bad_files(tmp_path / "mine")
    out = tmp_path / "runs"
    assert (
        main(["--data", str(folder), "train.epochs=1", "train.batch_size=32", f"run.out_dir={out}", "run.name=f"]) == 0
    )
    printed = capsys.readouterr().out
    assert "recipe folder.yaml (no --config given): simclr, small_cnn width 32, 1 epochs" in printed
    saved = yaml.safe_load((out / "f" / "config.yaml").read_text())
    # Natural images get natural-image augmentations, not the digits' (no mirroring, crops to 0.4 only).
    assert (saved["augment"]["hflip_p"], saved["augment"]["crop_scale_min"], saved["model"]["width"]) == (0.5, 0.2, 32)


@pytest.mark.parametrize(
    "override",
    ["train.bogus=1", "model.backbone=resnet19", "pruning.selector=nope", "pruning.memory=nope", "method.name=x"],
)
def test_a_bad_setting_fails_before_torch_loads(override):
    """The settings are checked before torch (several seconds to import) loads, so a typo fails at once."""
    script = (
        "import sys, time; start = time.perf_counter(); from ssl_emp.pretrain import main; "
        f"code = main([{override!r}]); print(code, 'torch' in sys.modules, time.perf_counter() - start)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    code, torch_loaded, seconds = done.stdout.split()
    assert code == "2" and "error: Invalid configuration" in done.stderr
    assert torch_loaded == "False"
    assert float(seconds) < 2.0  # about 0.2 s here; torch alone takes 2-6 s


def test_the_names_the_config_checks_without_torch_are_the_registries():
    from ssl_emp.models import BACKBONES
    from ssl_emp.models.names import BUILT_IN
    from ssl_emp.pruning import MEMORY_FORM_NAMES, MEMORY_FORMS, SCORERS, SELECTORS
    from ssl_emp.pruning.scorers.base import Scorer
    from ssl_emp.pruning.selectors.base import Selector

    assert tuple(BACKBONES) == BUILT_IN and tuple(MEMORY_FORMS) == MEMORY_FORM_NAMES
    assert all(issubclass(SELECTORS[name], Selector) for name in SELECTORS)
    assert all(issubclass(SCORERS[name], Scorer) for name in SCORERS)


def test_help_shows_what_a_plain_run_uses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    assert "train.epochs = 200  [--data FOLDER: 100]" in printed  # the recipe's 200, not the schema's 100
    assert (
        "model.width = 16  [--data FOLDER: 32]" in printed and "augment.hflip_p = 0.0  [--data FOLDER: 0.5]" in printed
    )


def test_a_labelled_folder_with_bad_files_trains_and_its_monitor_reads_past_them(tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = tmp_path / "labelled"
    for split, count in (("train", 40), ("val", 10)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
            (folder / "broken.png").write_bytes(b"")
    args = ["--data", str(root), *FAST, "train.epochs=1", f"run.out_dir={tmp_path / 'runs'}", "run.name=l"]
    assert main(args) == 0, capsys.readouterr().err
    assert "kNN top-1" in capsys.readouterr().out  # the monitor read the labelled splits, bad files left out


def test_a_folder_run_begun_with_another_recipe_resumes_with_its_own_settings(tmp_path, capsys):
    """A requeued job (the same command, run.resume=auto, no --config) goes on with what the run began with, not
    with the recipe a plain run picks today."""
    folder, _ = _folder_with_bad_files(tmp_path / "mine")
    small = ["model.proj_hidden_dim=32", "model.proj_output_dim=16", "train.batch_size=32", "train.epochs=1"]
    common = ["--data", str(folder), *small, f"run.out_dir={tmp_path / 'runs'}", "run.name=old"]
    assert main(["--config", "configs/default.yaml", *common]) == 0  # width 16, as folder runs were made before
    capsys.readouterr()
    assert main([*common, "run.resume=auto"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "(the run's own)" in printed and "width 16" in printed and "Already finished" in printed


def test_a_resume_refuses_a_folder_whose_readable_files_changed_though_their_count_did_not(tmp_path, capsys):
    """One bad file healed and a good one broken between sittings: the same count, but every sample after them
    sits elsewhere in the score table. The resume says so instead of training on shifted indices."""
    folder, bad = _folder_with_bad_files(tmp_path / "mine")
    common = ["--data", str(folder), *FAST, f"run.out_dir={tmp_path / 'runs'}", "run.name=r"]
    assert main([*common, "train.epochs=1"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(bad[0], "PNG")  # empty.png now reads
    (folder / "039.png").write_bytes(b"")  # and the last good one does not
    assert main([*common, "train.epochs=2", "run.extend=true", "run.resume=auto"]) == 2
    assert "not the same files" in capsys.readouterr().err


def test_a_folder_whose_every_file_is_unreadable_says_so(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="None of the 3 image files"):
        load_bank("imagefolder", str(folder), "train", 16, skip_unreadable=True)


def test_a_pruned_run_says_what_each_epoch_keeps():
    """The run-level rate is not what a pruned epoch keeps: the note gives each epoch's size, and it is the plan's."""
    import re
    import warnings

    from ssl_emp.pruning import Pruner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = Pruner(200, 5, rate=0.5, selector="random")
    said = pruner.describe_schedule()
    assert "epoch 1 trains on all 200 samples (warm-up)" in said and "epoch 5 trains on all 200 (annealing)" in said
    kept = int(re.search(r"epochs 2-4 keep about (\d+) of 200", said).group(1))
    sizes = [len(pruner.plan(epoch)) for epoch in range(5)]
    assert sizes[0] == sizes[4] == 200 and all(abs(size - kept) <= 1 for size in sizes[1:4])
    assert Pruner(200, 5).describe_schedule() is None  # nothing pruned, nothing said


def test_a_batch_fitted_to_pruning_keeps_one_size_in_full_and_pruned_epochs():
    """400 samples at rate 0.5 over 5 epochs: the pruned epochs keep 66 or 67, not the 200 that (1 - rate) suggests. A
    batch of 200 would train the full epochs on batches of 200 and the pruned one on a batch of 67, and the
    contrastive loss (which grows with the batch) would jump at the boundary as if it diverged."""
    import warnings

    import torch

    from ssl_emp.build import fit_batch_to_pruning
    from ssl_emp.pruning import Pruner, near_equal_batches

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = Pruner(400, 5, rate=0.5, selector="random")
    batch, note = fit_batch_to_pruning(256, pruner)
    assert batch == pruner.smallest_epoch() == 66 and "using 66, what the smallest pruned epoch keeps" in note
    sizes = {len(b) for e in range(5) for b in near_equal_batches(torch.arange(pruner.planned_size(e)), batch)}
    assert max(sizes) - min(sizes) <= 1, sizes
    assert fit_batch_to_pruning(64, pruner) == (64, "")  # a batch within what every epoch keeps stays as given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = Pruner(1347, 8, rate=0.7, selector="random")  # pruned epochs keep 89-90, the batch fits (1 - rate)
    batch, note = fit_batch_to_pruning(256, short)
    assert batch == 256 and "steps down where pruning starts and up where it ends" in note


def _drive(pruner, embeddings=None):
    import torch

    from ssl_emp.pruning import SampleStats

    for epoch in range(pruner.epochs):
        if pruner.needs_embeddings(epoch):
            pruner.set_embeddings(torch.arange(pruner.num_samples), embeddings, epoch)
        plan = pruner.plan(epoch)
        pruner.observe(plan.indices, SampleStats(torch.rand(len(plan))), epoch)
    return pruner


def test_the_end_of_a_run_says_who_got_the_budget():
    """One line: the never-kept share and the most-kept tenth's share of the pruned epochs' forwards, and where
    the selector embeds the data, the near-copies' and the rarest clusters' shares beside their shares of the
    pool. Planted: 300 scattered points and a burst of 100 near-copies; coverage gives the burst far less than
    its 25% of the pool."""
    import re

    import torch

    from ssl_emp.pruning import Pruner, SampleStats

    said = _drive(Pruner(400, 12, rate=0.8, selector="random", anneal=0.0, seed=0)).describe_budget(12)
    pruned_visits = _drive(Pruner(400, 12, rate=0.8, selector="random", anneal=0.0, seed=0)).table.visits - 1
    never = float((pruned_visits == 0).double().mean())
    assert said.startswith(f"{never:.0%} of the 400 samples never kept in the 11 pruned epochs")
    assert "near-copy" not in said  # random embeds nothing: it says only what it knows
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(300, 32, generator=generator), torch.randn(1, 32).repeat(100, 1)])
    said = _drive(Pruner(400, 12, rate=0.8, selector="coverage", anneal=0.0, seed=0), points).describe_budget(12)
    pool, forwards = map(int, re.search(r"near-copy \(cosine 0.9\) (\d+)% of the pool, (\d+)% of", said).groups())
    assert pool == 25 and forwards < 10, said
    assert Pruner(400, 12).describe_budget(12) is None  # nothing pruned, nothing said
    # Resumed (the checkpoint keeps the clustering, not the vectors), it reads what was computed, and never
    # clusters anew: a cluster-density run has no near-copy counts to give, and says nothing of them.
    for settings in ({"selector": "central"}, {"selector": "coverage", "coverage_density": "cluster"}):
        first = Pruner(400, 12, rate=0.8, anneal=0.0, seed=0, embed_every=0, **settings)
        for epoch in range(6):
            if first.needs_embeddings(epoch):
                first.set_embeddings(torch.arange(400), points, epoch)
            plan = first.plan(epoch)
            first.observe(plan.indices, SampleStats(torch.rand(len(plan))), epoch)
        resumed = Pruner(400, 12, rate=0.8, anneal=0.0, seed=0, embed_every=0, **settings)
        resumed.load_state_dict(first.state_dict())
        for epoch in range(6, 12):
            plan = resumed.plan(epoch)
            resumed.observe(plan.indices, SampleStats(torch.rand(len(plan))), epoch)
        said = resumed.describe_budget(12)
        assert "clusters" in said and "near-copy" not in said, said


def test_a_resume_that_would_change_the_fitted_batch_says_so_and_how_to_go_on(tmp_path, capsys):
    """The batch fitted to the smallest pruned epoch depends on the epochs: extending 4 epochs to 6 would re-cut
    the batches (89 to 215), and a resume inside an epoch counts its steps in batches. It refuses, naming the
    batch the run began with, and goes on with it when given."""
    common = [*FAST, "train.batch_size=512", "pruning.rate=0.7", "monitor.every=0"]
    where = [f"run.out_dir={tmp_path}", "run.name=r"]
    assert main([*common, "train.epochs=4", *where]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main([*common, "train.epochs=6", "run.extend=true", "run.resume=auto", *where]) == 2
    assert "Give train.batch_size=89 to go on" in capsys.readouterr().err
    given = [*common, "train.batch_size=89", "train.epochs=6", "run.extend=true", "run.resume=auto", *where]
    assert main(given) == 0, capsys.readouterr().err
