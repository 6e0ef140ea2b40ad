"""Each real loader on small files written here in the dataset's real on-disk format."""

import gzip
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from ssl_emp.data import DatasetNotFoundError, ImageBank, load_bank
from ssl_emp.data.datasets import subset_indices


def _write_idx(path, array, gz):
    magic = {3: 0x0803, 1: 0x0801}[array.ndim]
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(payload)


def _write_debian_package(folder, train: int, test: int, seed: int) -> None:
    """Gzipped IDX files as the Debian package installs them: ``train`` and ``test`` random 28x28 images."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train), ("t10k", test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), True)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), True)


def test_fashion_mnist_without_a_root_is_found_where_the_debian_package_puts_it(tmp_path, monkeypatch):
    """data.name=fashion-mnist alone: the package's gzipped files are unpacked into ./data and read from there,
    in pretraining as in evaluation (one lookup, in ssl_emp.data)."""
    package = tmp_path / "usr-share-datasets-fashion-mnist"
    _write_debian_package(package, train=4, test=2, seed=1)
    monkeypatch.setattr("ssl_emp.data.datasets.DEBIAN_FASHION_MNIST", package)
    monkeypatch.chdir(tmp_path)
    assert len(load_bank("fashion-mnist", None, "train")) == 4 and len(load_bank("fashion-mnist", None, "test")) == 2
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


@pytest.mark.slow
def test_processes_unpacking_fashion_mnist_at_once_all_get_it(tmp_path):
    """Two DDP ranks (or benchmark workers) on a fresh machine unpack the package's files together: each writes its
    own temporary file, so neither finds its file renamed away by the other (a shared name did, and one crashed)."""
    package = tmp_path / "package"
    _write_debian_package(package, train=20000, test=5, seed=2)
    code = (
        "import sys; import ssl_emp.data.datasets as d; from pathlib import Path; "
        f"d.DEBIAN_FASHION_MNIST = Path({str(package)!r}); "
        f"print(len(d.load_bank('fashion-mnist', {str(tmp_path / 'root')!r}, 'train')))"
    )
    starts = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120) for p in starts]
    assert all(p.returncode == 0 for p in starts), [err[-500:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["20000"] * 6


def test_digits_is_the_bundled_dataset_split_75_25():
    train, test = load_bank("digits", None, "train"), load_bank("digits", None, "test")
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and set(train.labels.tolist()) == set(range(10))


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = {
        "train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
    }
    labels = {"train": np.array([0, 1, 2, 3, 9], np.uint8), "t10k": np.array([4, 5, 6], np.uint8)}
    folder = tmp_path if gz else tmp_path / "FashionMNIST" / "raw"  # gzipped files are unpacked from the root
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images[prefix], gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels[prefix], gz)
    train = load_bank("fashion-mnist", str(tmp_path), "train")
    test = load_bank("fashion-mnist", str(tmp_path), "test")
    assert train.images.shape == (5, 1, 28, 28) and test.images.shape == (3, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images["train"]))
    assert train.labels.tolist() == [0, 1, 2, 3, 9] and test.labels.tolist() == [4, 5, 6]


def _cifar_entry(rng, n, label_key, num_classes):
    data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    return {"data": data, label_key: rng.integers(0, num_classes, n).tolist()}


def test_cifar10_reads_python_pickles(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_entry(rng, 2, "labels", 10)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    train = load_bank("cifar10", str(tmp_path), "train")
    test = load_bank("cifar10", str(tmp_path), "test")
    assert train.images.shape == (10, 3, 32, 32) and len(test) == 2 and train.num_classes == 10
    first = torch.from_numpy(batches["data_batch_1"]["data"][0].reshape(3, 32, 32))
    assert torch.equal(train.images[0], first)  # channel-first, same pixels
    assert test.labels.tolist() == batches["test_batch"]["labels"]


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 3)):
        entry = _cifar_entry(rng, n, "fine_labels", 100)
        entry["coarse_labels"] = [0] * n
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}, protocol=2))
    train = load_bank("cifar100", str(tmp_path), "train")
    assert train.images.shape == (4, 3, 32, 32) and train.num_classes == 100
    assert len(load_bank("cifar100", str(tmp_path), "test")) == 3


def test_stl10_reads_binary_files_and_pretrains_on_train_plus_unlabeled(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    arrays = {}
    for name, n in (("train", 3), ("test", 2), ("unlabeled", 4)):
        # STL-10 stores each image column-major: [N, C, W, H].
        arrays[name] = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        arrays[name].tofile(folder / f"{name}_X.bin")
        if name != "unlabeled":
            np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{name}_y.bin")
    train = load_bank("stl10", str(tmp_path), "train")
    test = load_bank("stl10", str(tmp_path), "test")
    assert train.images.shape == (7, 3, 96, 96)
    assert train.labels.tolist() == [0, 1, 2, -1, -1, -1, -1]  # 1-based on disk, -1 for unlabeled
    assert torch.equal(test.images[1], torch.from_numpy(arrays["test"][1]).transpose(1, 2))


def test_imagefolder_resizes_to_a_fixed_size(tmp_path):
    for split, count in (("train", 3), ("val", 1)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                img = torch.randint(0, 256, (3, 20 + 7 * i, 30), dtype=torch.uint8)
                torchvision.io.write_png(img, str(tmp_path / split / cls / f"{i}.png"))
    train = load_bank("imagefolder", str(tmp_path), "train", image_size=16)
    test = load_bank("imagefolder", str(tmp_path), "test", image_size=16)
    assert train.images.shape == (6, 3, 16, 16) and test.images.shape == (2, 3, 16, 16)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and train.num_classes == 2


def test_an_imagefolder_without_images_says_so(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="Found no valid file"):
        load_bank("imagefolder", str(tmp_path), "train")


@pytest.mark.parametrize(
    "name,hint",
    [
        ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
        ("cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python.tar.gz"),
        ("stl10", "stl10_binary.tar.gz"),
        ("imagefolder", "train/<class>"),
    ],
)
def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch, name, hint):
    # Hide the Debian package so the Fashion-MNIST case is missing even where it is installed.
    monkeypatch.setattr("ssl_emp.data.datasets.DEBIAN_FASHION_MNIST", tmp_path / "none")
    with pytest.raises(DatasetNotFoundError) as info:
        load_bank(name, str(tmp_path / "empty"), "train", image_size=8)
    assert hint in str(info.value) and name in str(info.value)


def test_missing_root_is_explained():
    with pytest.raises(DatasetNotFoundError, match="data.root is not set"):
        load_bank("cifar10", None, "train")


@pytest.mark.parametrize("total, subset", [(1347, 100), (1347, 1), (1347, 1346), (10, 7)])
def test_a_subset_is_distinct_in_range_indices_in_file_order_drawn_across_the_whole_set(total, subset):
    """``data.subset``: N distinct images, in file order, drawn at random (not the first N) and fixed: a run's
    own seed (the global RNG) does not change which images it gets."""
    torch.manual_seed(1)
    keep = subset_indices(total, subset)
    torch.manual_seed(2)
    assert torch.equal(subset_indices(total, subset), keep)
    assert keep.dtype == torch.long and keep.shape == (subset,)
    assert keep.unique().numel() == subset and 0 <= int(keep.min()) and int(keep.max()) < total
    assert torch.equal(keep, keep.sort().values)
    if 1 < subset < total - 1:
        assert not torch.equal(keep, torch.arange(subset))  # not simply the first N
    if subset >= 100:
        assert int(keep.max()) > total // 2 and int(keep.min()) < total // 2  # from across the whole set


def test_no_subset_or_one_as_large_as_the_data_is_everything_in_file_order():
    for subset in (None, 1347, 5000):
        assert torch.equal(subset_indices(1347, subset), torch.arange(1347))


def test_a_subset_bank_is_the_full_banks_images_at_the_subset_indices_resized():
    full = load_bank("digits", None, "train", image_size=16)
    part = load_bank("digits", None, "train", image_size=16, subset=100)
    keep = subset_indices(len(full), 100)
    assert part.images.shape == (100, 1, 16, 16) and part.num_classes == full.num_classes
    assert torch.equal(part.images, full.images[keep]) and torch.equal(part.labels, full.labels[keep])


def test_bank_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        ImageBank(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), 2, "x")


@pytest.mark.parametrize(
    "name, layout",
    [
        (
            "cifar10",
            {
                "cifar-10-batches-py": [
                    "data_batch_1",
                    "data_batch_2",
                    "data_batch_3",
                    "data_batch_4",
                    "data_batch_5",
                    "test_batch",
                    "batches.meta",
                ]
            },
        ),
        (
            "fashion-mnist",
            {
                "FashionMNIST/raw": [
                    "train-images-idx3-ubyte",
                    "train-labels-idx1-ubyte",
                    "t10k-images-idx3-ubyte",
                    "t10k-labels-idx1-ubyte",
                ]
            },
        ),
    ],
)
def test_dataset_in_the_wrong_format_is_explained(tmp_path, name, layout):
    for folder, files in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for file in files:
            (tmp_path / folder / file).write_bytes(b"not a dataset file\n")
    with pytest.raises(ValueError, match=f"Dataset '{name}'.* is not in the .* format"):
        load_bank(name, str(tmp_path), "train")
