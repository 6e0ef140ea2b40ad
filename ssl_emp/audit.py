"""``ssl-emp-audit DATA`` (``python -m ssl_emp.audit``): what a folder of images (or a dataset) holds, without
labels, before you prune it. One embedding pass, with a run's backbone (``--checkpoint RUN``) or, without one,
after a short pretraining on the data that it says it makes; then the near-copy share and its largest groups,
how uneven the clusters are, the outlier share, the number of distinct images, and what to do: prune at
``random`` or de-duplicate first (:func:`ssl_emp.curation.recommend`; why never ``coverage``: docs/auditing.md).
It prints the figures and writes ``audit.json``, ``audit.html`` and its pictures to ``--out``;
``--write-weights FILE`` writes the de-duplicated, cluster-balanced weights that ``pruning.selector=prior
pruning.prior_file=FILE`` reads."""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Optional

DEFAULT_PRETRAIN_EPOCHS = 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-emp-audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", metavar="DATA", help="a folder of images, or a dataset name (digits, cifar10, ...)")
    parser.add_argument("--checkpoint", metavar="RUN", help="embed with this run's (or exported) backbone")
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=DEFAULT_PRETRAIN_EPOCHS,
        help=f"without --checkpoint: epochs of the short pretraining made first (default {DEFAULT_PRETRAIN_EPOCHS})",
    )
    parser.add_argument("--out", default=None, help="folder for the report (default: runs/audit-<data name>)")
    parser.add_argument("--pretrain-out", default=None, help="the short pretraining's run (default: OUT/pretrain)")
    parser.add_argument("--write-weights", metavar="FILE", help="write curation weights, one per image, for prior")
    parser.add_argument("--balance", type=float, default=0.5, help="the weights' cluster balance: 1 random, 0 equal")
    parser.add_argument("--clusters", type=int, default=None, help="k-means clusters (default sqrt(N))")
    parser.add_argument("--data-root", default=None, help="where a named dataset lives (as data.root)")
    parser.add_argument("--image-size", type=int, default=None, help="as data.image_size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _pretrained_for(args, out: Path):
    """The backbone to embed with: ``--checkpoint``'s, or one pretrained here for ``--pretrain-epochs``."""
    from ssl_emp.device import resolve_device
    from ssl_emp.evaluation.pretrained import load_pretrained

    device = resolve_device(args.device)
    if args.checkpoint:
        return load_pretrained(args.checkpoint, device)
    import ssl_emp

    run_dir = Path(args.pretrain_out) if args.pretrain_out else out / "pretrain"
    saved = run_dir / "config.yaml"
    if saved.is_file():  # a pretraining made earlier is reused, if it is of this data
        import yaml

        from ssl_emp.config import data_overrides, parse_overrides

        asked = parse_overrides(data_overrides(args.data))["data"]
        data = (yaml.safe_load(saved.read_text()) or {}).get("data", {})
        if (data.get("name"), data.get("root")) != (asked["name"], asked.get("root", data.get("root"))):
            raise ValueError(
                f"{run_dir} holds a pretraining on other data ({data.get('name')} at {data.get('root')}); give "
                "--out (or --pretrain-out) another folder, or --checkpoint RUN"
            )
    print(
        f"no --checkpoint: pretraining {args.pretrain_epochs} epochs on {args.data} first, into {run_dir} (its "
        "backbone makes the embeddings; give --checkpoint RUN to audit with a run's backbone instead)"
    )
    overrides = [f"train.epochs={args.pretrain_epochs}", "monitor.every=0", "tracking.wandb=disabled"]
    if args.image_size:
        overrides.append(f"data.image_size={args.image_size}")
    if args.data_root:
        overrides.append(f"data.root={json.dumps(args.data_root)}")
    run = ssl_emp.train(out=run_dir, data=args.data, overrides=overrides, resume="auto", show_progress=False)
    return load_pretrained(str(run.run_dir), device)


def _bank(args, pretrained):
    """The images, as the backbone reads them (its channels and side)."""
    from ssl_emp.config import data_overrides, parse_overrides
    from ssl_emp.data import load_bank
    from ssl_emp.evaluation.features import adapt_bank

    data = parse_overrides(data_overrides(args.data))["data"]
    image_size = args.image_size or pretrained.data_info["image_size"]
    bank = load_bank(data["name"], data.get("root", args.data_root), "train", image_size, skip_unreadable=True)
    adapted, _ = adapt_bank(bank, pretrained.data_info["channels"], pretrained.data_info["image_size"])
    return bank, adapted


def _grid_png(images, path: Path, rows: list[list[int]]) -> None:
    """Each row of ``rows`` (indices into ``images``) as one row of a picture, enlarged to be seen."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import write_png
    from torchvision.utils import make_grid

    width = max(len(r) for r in rows)
    tiles = []
    for row in rows:
        picked = images[torch.as_tensor(row)].float().div(255)
        pad = torch.ones(width - len(row), *picked.shape[1:])
        tiles.append(torch.cat([picked, pad]))
    tiles = torch.cat(tiles)
    tiles = F.interpolate(tiles, scale_factor=max(1, 64 // tiles.shape[-1]), mode="nearest")  # small images, seen
    grid = make_grid(tiles, nrow=width, padding=2, pad_value=1.0)
    write_png(grid.expand(3, -1, -1).mul(255).round().to(torch.uint8).contiguous(), str(path))


def _cluster_png(sizes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(sizes, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(len(ordered)), ordered, width=1.0, color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("cluster, largest first")
    ax.set_ylabel("images")
    ax.set_title("cluster sizes (a flat profile: even data; a steep one: a long tail)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(found, parts, images, paths: Optional[list[str]], out: Path) -> Path:
    """``audit.json``, the pictures (largest copy groups, cluster sizes, outliers) and ``audit.html``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(found.as_dict(), indent=2) + "\n")
    sizes = torch.bincount(parts.copy_group, minlength=len(parts.copy_group))
    largest = sizes.argsort(descending=True)[:6]
    groups = [(parts.copy_group == g).nonzero().squeeze(1)[:10].tolist() for g in largest.tolist() if sizes[g] > 1]
    figures = []
    if groups:
        _grid_png(images, out / "copy_groups.png", groups)
        figures.append(("copy_groups.png", "the largest groups of copies, one a row (up to 10 shown)"))
    _cluster_png(torch.bincount(parts.assignment, minlength=parts.count).tolist(), out / "clusters.png")
    figures.append(("clusters.png", "how many images each cluster holds"))
    outliers = parts.outlier.nonzero().squeeze(1)[:20].tolist()
    if outliers:
        _grid_png(images, out / "outliers.png", [outliers[:10], outliers[10:]] if len(outliers) > 10 else [outliers])
        figures.append(("outliers.png", "images in clusters the junk guard flags (up to 20)"))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in found.as_dict().items()
    )
    pictures = "".join(f"<h3>{html.escape(caption)}</h3><img src='{name}'>" for name, caption in figures)
    listed = ""
    if paths is not None and groups:
        listed = "<h3>files of the largest copy groups</h3>" + "".join(
            "<p>" + "<br>".join(html.escape(paths[i]) for i in group) + "</p>" for group in groups[:3]
        )
    page = (
        f"<html><head><meta charset='utf-8'><title>ssl_emp audit</title></head><body><h1>Audit of "
        f"{found.num_samples} images</h1><p><b>{html.escape(found.recommendation)}</b>: {html.escape(found.why)}"
        f"</p><table>{rows}</table>{pictures}{listed}</body></html>"
    )
    (out / "audit.html").write_text(page)
    return out / "audit.html"


def summary(found) -> str:
    return (
        f"audit of {found.num_samples} images (no labels read):\n"
        f"  copies:        {found.near_copy_share:.1%} repeat another image ({found.exact_copy_share:.1%} pixel for "
        f"pixel), in {found.copy_groups} groups\n"
        f"  clusters:      the largest tenth of {found.coarse_clusters} coarse clusters hold "
        f"{found.top_cluster_share:.1%} of the images, as even as {found.effective_clusters:.1f} equal ones "
        "(a rough figure: it has not told long tails from clean data)\n"
        f"  outliers:      {found.outlier_share:.1%} (in clusters of one, or loose ones)\n"
        f"  distinct:      {found.effective_size} images once copies count once\n"
        f"  recommended:   {found.recommendation}: {found.why}"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ssl_emp.curation import audit, curation_weights
    from ssl_emp.evaluation.features import extract_features

    name = Path(args.data).name or "data"
    out = Path(args.out) if args.out else Path("runs") / f"audit-{name}"
    pretrained = _pretrained_for(args, out)
    bank, adapted = _bank(args, pretrained)
    device = next(pretrained.backbone.parameters()).device
    features, _ = extract_features(pretrained.backbone, pretrained.normalize, adapted.to(device), device)
    found, parts = audit(features, bank.images, clusters=args.clusters, seed=args.seed)
    print(summary(found))
    if bank.unreadable:
        path, reason = bank.unreadable[0]
        print(f"  unreadable:    {len(bank.unreadable)} files left out (the first: '{path}': {reason})")
    report = write_report(found, parts, bank.images, bank.paths or None, out)
    print(f"  report:        {report}")
    if args.write_weights:
        weights = curation_weights(parts, args.balance)
        Path(args.write_weights).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write_weights).write_text("\n".join(f"{w:.6g}" for w in weights.tolist()) + "\n")
        copies = int((torch.bincount(parts.copy_group) > 1).sum())
        print(
            f"  weights:       {args.write_weights} ({len(weights)} images; {copies} copy groups weigh as one "
            f"image each, clusters balanced at {args.balance:g}); train on it with pruning.selector=prior "
            f"pruning.prior_file={args.write_weights}"
        )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ssl_emp.checkpoint import CheckpointError
    from ssl_emp.config import ConfigError
    from ssl_emp.data import DatasetNotFoundError, UnreadableImageError
    from ssl_emp.engine import RunDirError

    try:
        return run(args)
    except (CheckpointError, ConfigError, DatasetNotFoundError, RunDirError, UnreadableImageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naudit: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
