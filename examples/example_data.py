"""Real image data as a torchvision dataset, for the pruning examples: Fashion-MNIST where its files are
present, else scikit-learn's bundled digits written once as PNG files and read by ``ImageFolder``."""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets


def torchvision_dataset(name: str, root: str, transform):
    if name == "fashion-mnist":  # the IDX files under <root>/FashionMNIST/raw (see README, "Data")
        return datasets.FashionMNIST(root, train=True, download=False,
                                     transform=lambda image: transform(image.convert("RGB")))
    folder = Path(root) / "digits-png"
    if not folder.is_dir():
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i, (image, label) in enumerate(zip(digits.images, digits.target)):
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / str(label) / f"{i:04d}.png")
    return datasets.ImageFolder(str(folder), transform=transform)
