"""Audit a folder before pruning it, end to end, on a folder this script writes: scikit-learn's digits as 16 px
PNGs, 400 distinct images plus 172 exact copies of some of them (30% of the folder) and two files that cannot be
decoded, the kind of folder a camera roll or a scrape gives.

    .venv/bin/python examples/audit_a_folder.py --out docs/images/audit

It runs ``ssl-emp-audit`` on the folder (a short pretraining first, as there is no checkpoint), which prints its
figures and recommendation and writes its report and pictures to ``--out``, and the curation weights a pruned run
then reads with ``pruning.selector=prior``. The pictures in docs/auditing.md are this script's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from ssl_emp.audit import main as audit


def write_folder(folder: Path, distinct: int = 400, copies: int = 172, bad: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images[:distinct]
    for i in range(distinct + copies):
        pixels = (images[i % distinct] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16), Image.NEAREST).save(folder / f"{i:04d}.png")
    for i in range(bad):
        (folder / f"broken{i}.png").write_bytes(b"")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/audit-example", help="where the audit writes its report")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "my_images")
        weights = Path(args.out) / "weights.txt"
        return audit(
            [
                str(folder),
                "--out",
                args.out,
                "--pretrain-epochs",
                str(args.pretrain_epochs),
                "--write-weights",
                str(weights),
                "--pretrain-out",
                str(Path(tmp) / "pretrain"),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
