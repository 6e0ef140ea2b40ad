"""Dataset loaders: each returns an :class:`ImageBank` for a split ("train" or "test").

The real on-disk formats are read through torchvision. torchvision verifies the
MD5 of the official CIFAR/STL archives; we check that the files exist instead,
so that a copy re-packed by a user (or written by our tests) loads as well.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torchvision
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from ssl_emp.data.bank import ImageBank

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_ROOT = "data"  # relative to the working directory, where the recipes and docs keep datasets


def default_root(name: str, root: Optional[str]) -> Optional[str]:
    """``data.root``, or where a dataset is found without one: Fashion-MNIST from the Debian package is unpacked
    into ``./data`` (the others need their files put somewhere, so their root must be given)."""
    return root or (DEFAULT_ROOT if name == "fashion-mnist" else None)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not where the config says; the message says how to get them."""


HOW_TO_GET = {
    "fashion-mnist": (
        "Install the Debian package (`apt-get install dataset-fashion-mnist`, files land in "
        f"{DEBIAN_FASHION_MNIST}) and ssl_emp unpacks it into <root>/FashionMNIST/raw on first use; "
        "or put the four IDX files (train-images-idx3-ubyte, ...; gzipped or not) in <root>/FashionMNIST/raw."
    ),
    "cifar10": "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into <root> "
    "(giving <root>/cifar-10-batches-py/data_batch_1 ...).",
    "cifar100": "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it into <root> "
    "(giving <root>/cifar-100-python/train, test, meta).",
    "stl10": "Download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract it into <root> "
    "(giving <root>/stl10_binary/train_X.bin ...).",
    "imagefolder": "Point data.root at a folder of images (flat or nested; labelled when laid out as "
    "train/<class>/<image>, with val/ or test/ alike for evaluation).",
}


def _missing(name: str, root: Optional[str], detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"Dataset '{name}' not found at root '{root}': {detail}. {HOW_TO_GET[name]}")


def _require_root(name: str, root: Optional[str]) -> Path:
    if not root:
        raise _missing(name, root, "data.root is not set")
    return Path(root)


# --------------------------------------------------------------------------- digits


def load_digits(root: Optional[str], split: str, image_size: Optional[int] = None) -> ImageBank:
    """scikit-learn's bundled 8x8 digits (1,797 real images), split 75/25 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=0.25, random_state=0, stratify=digits.target
    )
    idx = train_idx if split == "train" else test_idx
    return ImageBank(torch.from_numpy(images[idx]), torch.from_numpy(digits.target[idx]).long(), 10, "digits")


# --------------------------------------------------------------------------- fashion-mnist

FASHION_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _unpack_idx_files(raw: Path, sources: list[Path]) -> None:
    """Un-gzip the IDX files torchvision expects into ``raw`` from the first source folder that has them."""
    for name in FASHION_FILES:
        if (raw / name).is_file():
            continue
        for folder in sources:
            gz = folder / f"{name}.gz"
            if gz.is_file():
                raw.mkdir(parents=True, exist_ok=True)
                # One temporary file per process: DDP ranks or benchmark workers starting together each unpack, and
                # the last rename wins with identical bytes (a shared name made one rename find its file gone).
                tmp = raw / f".{name}.{os.getpid()}.tmp"
                with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                tmp.replace(raw / name)
                break


def load_fashion_mnist(root: Optional[str], split: str, image_size: Optional[int] = None) -> ImageBank:
    root_path = _require_root("fashion-mnist", root)
    raw = root_path / "FashionMNIST" / "raw"
    _unpack_idx_files(raw, [raw, root_path, DEBIAN_FASHION_MNIST])
    missing = [n for n in FASHION_FILES if not (raw / n).is_file()]
    if missing:
        raise _missing("fashion-mnist", root, f"missing {', '.join(missing)} in {raw}")
    try:
        ds = torchvision.datasets.FashionMNIST(str(root_path), train=(split == "train"), download=False)
    except (AssertionError, ValueError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"Dataset 'fashion-mnist' in '{raw}' is not in the IDX format "
            f"({type(exc).__name__}: {exc}). {HOW_TO_GET['fashion-mnist']}"
        ) from None
    return ImageBank(ds.data[:, None].contiguous(), ds.targets.long(), 10, "fashion-mnist")


# --------------------------------------------------------------------------- CIFAR


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        # Class names are not needed for the image bank; skip the meta file's MD5 check with it.
        self.classes = []


class _CIFAR100Files(_CIFAR10Files, torchvision.datasets.CIFAR100):
    pass


def _load_cifar(cls, name: str, num_classes: int, root: Optional[str], split: str) -> ImageBank:
    root_path = _require_root(name, root)
    try:
        ds = cls(str(root_path), train=(split == "train"), download=False)
    except RuntimeError as exc:
        raise _missing(name, root, f"expected {root_path / cls.base_folder}") from exc
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(
            f"Dataset '{name}' at '{root}' is not in the CIFAR python format ({exc!r}). {HOW_TO_GET[name]}"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageBank(images, torch.as_tensor(ds.targets).long(), num_classes, name)


def load_cifar10(root, split, image_size=None) -> ImageBank:
    return _load_cifar(_CIFAR10Files, "cifar10", 10, root, split)


def load_cifar100(root, split, image_size=None) -> ImageBank:
    return _load_cifar(_CIFAR100Files, "cifar100", 100, root, split)


# --------------------------------------------------------------------------- STL-10


class _STL10Files(torchvision.datasets.STL10):
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)


def load_stl10(root: Optional[str], split: str, image_size: Optional[int] = None) -> ImageBank:
    """Pretraining ("train") uses STL-10's train+unlabeled images, as is standard; "test" is the test split."""
    root_path = _require_root("stl10", root)
    stl_split = "train+unlabeled" if split == "train" else "test"
    folder = root_path / _STL10Files.base_folder
    if stl_split == "train+unlabeled" and not (folder / "unlabeled_X.bin").is_file():
        stl_split = "train"  # a labelled-only copy still pretrains; the unlabeled 100k images are optional
    try:
        ds = _STL10Files(str(root_path), split=stl_split, download=False)
    except RuntimeError as exc:
        raise _missing("stl10", root, f"expected {folder}") from exc
    labels = torch.from_numpy(ds.labels.astype(np.int64))
    return ImageBank(torch.from_numpy(ds.data).contiguous(), labels, 10, "stl10")


# --------------------------------------------------------------------------- image folders


class UnreadableImageError(RuntimeError):
    """An image file that cannot be decoded; the message names it, ``reason`` says why in the decoder's words."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def subset_indices(total: int, subset: Optional[int]) -> torch.Tensor:
    """The fixed random subset ``data.subset`` means, in file order: the same for every run and seed."""
    if subset is None or subset >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:subset].sort().values


def decode_reason(exc: Exception, limit: int = 240) -> str:
    """Why a decoder refused a file, in its own words: its first line, without the C++ source location torchvision
    puts first (``operator(), /path/decode_png.cpp:79, ...``), shortened at a word if it is long."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    reason = re.sub(r"^[^,]*, \S+\.\w+:\d+, ", "", lines[0])
    if len(reason) <= limit:
        return reason
    return reason[:limit].rsplit(" ", 1)[0] + " ..."


def decode_square(path: str, image_size: int) -> torch.Tensor:
    """One image file as uint8 [3, S, S]: decoded as RGB, shorter side resized to S, centre-cropped."""
    try:
        img = torchvision.io.decode_image(path, mode=torchvision.io.ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        reason = decode_reason(exc)
        raise UnreadableImageError(f"Cannot read image '{path}': {reason}", reason) from None
    img = TF.resize(img, [image_size], antialias=True)
    return TF.center_crop(img, [image_size, image_size])


@dataclass
class FolderListing:
    """The image files of one split, in a fixed order, with their labels (-1 throughout when unlabelled)."""

    root: str
    paths: list[str]
    targets: list[int]
    classes: list[str]


def _images_under(folder: Path) -> list[str]:
    """Every image file under ``folder``, at any depth, in sorted path order (hidden files and folders left out)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)
        ]
    return found


def _has_loose_images(folder: Path) -> bool:
    return any(f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS) for f in folder.iterdir())


HELD_OUT = ("val", "test")  # the folders, in order of preference, that hold a labelled folder's held-out split


def has_held_out_split(root: Optional[str]) -> bool:
    """Whether an image folder has a held-out split (``val/`` or ``test/``) for evaluation to classify."""
    return bool(root) and any((Path(root) / name).is_dir() for name in HELD_OUT)


def image_folder(root: Optional[str], split: str) -> FolderListing:
    """The split's image files (nothing is decoded). Labelled: ``root/train/<class>/...`` (and ``root/val`` or
    ``root/test`` alike), read as torchvision's ``ImageFolder`` reads them. Unlabelled, for pretraining: any other
    folder of images, flat or nested (``root/train`` if there is one, else ``root``), every file labelled -1."""
    root_path = _require_root("imagefolder", root)
    if not root_path.is_dir():
        raise _missing("imagefolder", root, "no such folder")
    candidates = ["train"] if split == "train" else list(HELD_OUT)
    folder = next((root_path / c for c in candidates if (root_path / c).is_dir()), None)
    if folder is None and split != "train":
        raise _missing("imagefolder", root, "no val/ or test/ folder (evaluation needs labelled held-out images)")
    if folder is None or _has_loose_images(folder) or not any(d.is_dir() for d in folder.iterdir()):
        folder = folder or root_path
        paths = _images_under(folder)
        if not paths:
            raise _missing("imagefolder", root, f"no image files ({', '.join(IMG_EXTENSIONS)}) under {folder}")
        return FolderListing(str(folder), paths, [-1] * len(paths), [])
    try:
        ds = torchvision.datasets.ImageFolder(str(folder), loader=lambda path: path)
    except FileNotFoundError as exc:
        raise _missing("imagefolder", root, str(exc)) from None
    return FolderListing(str(folder), [path for path, _ in ds.samples], list(ds.targets), list(ds.classes))


# The largest side a folder is read at by default: the size ImageNet-style backbones are trained at. Memory and
# compute grow with its square, and a larger photo keeps its full size only when data.image_size asks for it.
LARGEST_DEFAULT_SIZE = 224


def default_image_size(listing: FolderListing, sample: int = 2048) -> tuple[int, str]:
    """The square side to read a folder's images at when ``data.image_size`` is not set, and why, in words: the
    shorter side of its images (they are resized by it, then centre-cropped), or where that varies the median
    shorter side, capped at :data:`LARGEST_DEFAULT_SIZE`. Only the headers of a fixed sample of the files are
    read (as many as :meth:`ImageFolderStream.channel_stats` reads), unreadable ones left out."""
    from PIL import Image

    shapes = []
    for i in subset_indices(len(listing.paths), sample).tolist():
        try:
            with Image.open(listing.paths[i]) as image:
                shapes.append(image.size)
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image PIL can read: left out here
            continue
    if not shapes:
        raise UnreadableImageError(f"None of the sampled images under '{listing.root}' could be read.")
    sides = sorted(min(shape) for shape in shapes)
    side = sides[(len(sides) - 1) // 2]
    total = len(listing.paths)
    read = f"all {total}" if len(shapes) == total else f"{len(shapes)} sampled of {total}"
    if len(set(shapes)) == 1:
        ((w, h),) = set(shapes)
        why, rule = f"the images are {w}x{h} ({read} read)", "their side" if w == h else "their shorter side"
    else:
        why, rule = f"the images' shorter sides run from {sides[0]} to {sides[-1]} px ({read} read)", "the median"
    if side > LARGEST_DEFAULT_SIZE:
        return LARGEST_DEFAULT_SIZE, f"{why}; {rule}, {side}, capped at {LARGEST_DEFAULT_SIZE}"
    return side, why if rule == "their side" else f"{why}; {rule}"


def load_imagefolder(
    root: Optional[str],
    split: str,
    image_size: Optional[int] = None,
    subset: Optional[int] = None,
    skip_unreadable: bool = False,
) -> ImageBank:
    """``root/train/<class>/*`` (and ``root/val`` or ``root/test``), or an unlabelled folder of images (labels -1;
    see :func:`image_folder`), resized (shorter side) and centre-cropped at load, to ``image_size`` or by default
    to :func:`default_image_size`. Only the ``subset`` is decoded. A file that cannot be decoded stops the load,
    naming it, or with ``skip_unreadable`` is left out and listed in the bank's ``unreadable``. For folders that
    do not fit in memory: ``data.in_memory=false``."""
    from ssl_emp.progress import Progress

    ds = image_folder(root, split)
    image_size = image_size or default_image_size(ds)[0]
    keep = subset_indices(len(ds.paths), subset).tolist()
    images = torch.empty(len(keep), 3, image_size, image_size, dtype=torch.uint8)
    read, unreadable = [], []
    # A bar in a terminal; in a log file, a plain line a minute (tqdm's carriage returns would pile up there).
    loading = Progress(f"loading {ds.root}", 1, len(keep), stream=sys.stderr, item="img", unit_lines=False)
    with loading as progress:
        progress.start(1, len(keep))
        for step, i in enumerate(keep):
            try:
                images[len(read)] = decode_square(ds.paths[i], image_size)
                read.append(i)
            except UnreadableImageError as exc:
                if not skip_unreadable:
                    raise
                unreadable.append((ds.paths[i], exc.reason))
            progress.step(step + 1, 1, None)
    if keep and not read:
        path, reason = unreadable[0]
        raise UnreadableImageError(
            f"None of the {len(keep)} image files under '{ds.root}' could be read; the first, '{path}': {reason}"
        )
    labels = torch.as_tensor(ds.targets, dtype=torch.long)[torch.as_tensor(read, dtype=torch.long)]
    paths = [ds.paths[i] for i in read]
    return ImageBank(images[: len(read)], labels, len(ds.classes), "imagefolder", unreadable, paths)


LOADERS: dict[str, Callable[..., ImageBank]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "imagefolder": load_imagefolder,
}


def load_bank(
    name: str,
    root: Optional[str],
    split: str,
    image_size: Optional[int] = None,
    subset: Optional[int] = None,
    skip_unreadable: bool = False,
) -> ImageBank:
    """Load one split as an image bank, optionally resized and cut to a fixed random subset; ``skip_unreadable``:
    an image folder's undecodable files are left out (listed in the bank's ``unreadable``)."""
    if name not in LOADERS:
        raise ValueError(f"Unknown dataset '{name}'. Known: {', '.join(LOADERS)}.")
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split '{split}': use 'train' or 'test'.")
    root = default_root(name, root)
    if name == "imagefolder":  # decodes only the subset it keeps
        return load_imagefolder(root, split, image_size, subset, skip_unreadable)
    bank = LOADERS[name](root, split, image_size)
    if image_size is not None and bank.image_size != image_size:
        images = TF.resize(bank.images, [image_size, image_size], antialias=True)
        bank = ImageBank(images, bank.labels, bank.num_classes, bank.name)
    if subset is not None and subset < len(bank):
        bank = bank.subset(subset_indices(len(bank), subset))
    return bank
