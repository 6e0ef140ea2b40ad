"""What the two pruning examples share: their options, their data, their views and their backbone.

The data is real images as a torchvision dataset: Fashion-MNIST where its files are present, else
scikit-learn's bundled digits written once as PNG files and read by ``ImageFolder``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightly.transforms import SimCLRTransform
from torch import nn
from torchvision import datasets


def example_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--root", default="data")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def simclr_views() -> SimCLRTransform:
    """lightly's SimCLR views, at 16 px for these small images (no blur or flip: they are digits and clothes)."""
    return SimCLRTransform(input_size=16, cj_strength=0.5, min_scale=0.4, gaussian_blur=0.0, hf_prob=0.0)


def small_backbone() -> tuple[nn.Module, int]:
    """A CPU-sized CNN and its feature width."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ), 64


def torchvision_dataset(name: str, root: str, transform):
    if name == "fashion-mnist":  # the IDX files under <root>/FashionMNIST/raw (see README, "Data")
        return datasets.FashionMNIST(
            root, train=True, download=False, transform=lambda image: transform(image.convert("RGB"))
        )
    folder = Path(root) / "digits-png"
    if not folder.is_dir():
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i, (image, label) in enumerate(zip(digits.images, digits.target)):
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / str(label) / f"{i:04d}.png")
    return datasets.ImageFolder(str(folder), transform=transform)
