"""How well the label-free audit (``ssl_emp.curation.audit``) recovers what the pruning benchmark's regimes plant,
and where its recommendation's two thresholds sit: chosen on the Fashion-MNIST family (v4's tuning family) and
read on the digits family, never looked at while choosing.

Each regime's pool is pretrained on briefly, as ``ssl-emp-audit`` does without ``--checkpoint``, but with the
regime's own recipe (the benchmark's small CNN at width 8; the audit uses the folder recipe's width 32) for
``--epochs`` epochs; it is embedded by that backbone and audited. The planted truth is the regime's copy and
junk flags and, for long tails, the class imbalance.

    python benchmarks/audit_calibration.py --out benchmarks/results/audit_calibration.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pruning_quality.regimes import ALL_REGIMES, DATA_ROOT, ROOT, load_regime  # noqa: E402
from ssl_emp.build import pretrain  # noqa: E402
from ssl_emp.config import load_pretrain_config  # noqa: E402
from ssl_emp.curation import audit  # noqa: E402
from ssl_emp.evaluation.features import extract_features  # noqa: E402
from ssl_emp.evaluation.pretrained import load_pretrained  # noqa: E402

FAMILIES = {
    "fashion (thresholds chosen here)": ["fashion-mnist", "longtail", "dups90", "junk90-noise"],
    "digits (never looked at)": ["digits", "digits-lt10", "digits-lt20", "digits-lt50", "digits-bursts", "digits-mix"],
}


FEATURES_DIR = None  # --keep-features


def planted(data) -> dict:
    labels = data.pool.labels
    real = labels >= 0
    counts = torch.bincount(labels[real], minlength=data.pool.num_classes).double()
    return {
        "copy_share": float(data.is_copy.double().mean()) if data.is_copy is not None else 0.0,
        "junk_share": float(data.is_junk.double().mean()) if data.is_junk is not None else 0.0,
        "imbalance": float(counts.max() / counts[counts > 0].min()),
    }


def audit_regime(name: str, epochs: int, workdir: Path) -> dict:
    regime = ALL_REGIMES[name]
    data = load_regime(name)
    overrides = [
        *regime.overrides,
        f"data.root={DATA_ROOT}",
        f"train.epochs={epochs}",
        "monitor.every=0",
        "tracking.wandb=disabled",
        f"run.out_dir={workdir}",
        f"run.name={name}",
    ]
    cfg = load_pretrain_config(ROOT / regime.recipe, overrides)
    started = time.perf_counter()
    result = pretrain(cfg, show_progress=False, train_bank=data.pool)
    backbone = load_pretrained(str(result.run_dir), torch.device("cpu"))
    features, _ = extract_features(backbone.backbone, backbone.normalize, data.pool, torch.device("cpu"))
    found, _ = audit(features, data.pool.images)
    if FEATURES_DIR is not None:  # kept for choosing the thresholds: the features and what was planted
        flags = {"is_copy": data.is_copy, "is_junk": data.is_junk, "labels": data.pool.labels}
        torch.save({"features": features, **flags}, Path(FEATURES_DIR) / f"{name}.pt")
    return {
        "regime": name,
        "images": len(data.pool),
        "planted": planted(data),
        "audit": found.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/audit_calibration.json")
    parser.add_argument("--epochs", type=int, default=30, help="the short pretraining's epochs (ssl-emp-audit's)")
    parser.add_argument("--keep-features", default=None, help="a folder to save each regime's features in")
    parser.add_argument("--only", nargs="*", default=None, help="these regimes only")
    args = parser.parse_args()
    global FEATURES_DIR
    FEATURES_DIR = args.keep_features
    if FEATURES_DIR:
        Path(FEATURES_DIR).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, names in FAMILIES.items():
            for name in names:
                if args.only and name not in args.only:
                    continue
                row = {"family": family, **audit_regime(name, args.epochs, Path(tmp))}
                rows.append(row)
                a, p = row["audit"], row["planted"]
                print(
                    f"{name:14s} n={row['images']:6d}  copies planted {p['copy_share']:.3f} found "
                    f"{a['near_copy_share']:.3f} (exact {a['exact_copy_share']:.3f})  "
                    f"junk planted {p['junk_share']:.3f} "
                    f"outliers {a['outlier_share']:.3f}  imbalance {p['imbalance']:6.1f} top-10% clusters "
                    f"{a['top_cluster_share']:.3f}  -> {a['recommendation']}  ({row['seconds']} s)",
                    flush=True,
                )
                Path(args.out).write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
