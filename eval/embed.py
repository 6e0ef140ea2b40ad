"""Embeddings you can look at: ``ssl-emp-embed RUN [--data DATA]`` (``python -m eval.embed``).

It embeds every image of the run's pretraining data (or of ``--data``: a folder or a dataset name) with the
run's backbone, and writes to ``--out`` (default ``RUN/embed``):

- ``embeddings.safetensors``: ``embeddings`` [N, D] float32 and ``index`` [N] (the image's place in the data);
- ``embeddings.csv``: per image its index, its file (for a folder), its cluster, and, where the data is the
  run's own, what the pruner did with it (visits, final score, last epoch trained, kept in the last epoch);
- ``map.png``: a 2-D map of the embeddings (UMAP where the ``umap-learn`` package is installed, else PCA),
  coloured four ways: by cluster, by visits, by final score and by kept or skipped (in the last epoch where it was
  pruned; else whether any pruned epoch kept the image), so you see what the pruner skipped. The same picture
  goes to the run's W&B project unless ``--no-wandb``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Optional

import torch


def two_d(features: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``(points [N, 2], method)``: UMAP where it is installed, else the top two principal components."""
    try:
        import umap  # optional: pip install umap-learn

        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(features.cpu().numpy())
        return torch.as_tensor(points), "UMAP"
    except ImportError:
        centred = features - features.mean(dim=0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        return centred @ v[:, :2], "PCA"


KEPT_LAST = "kept in the last epoch"
KEPT_ANY = "kept in a pruned epoch"


def pruned_epochs(config: dict, epochs_done: int) -> list[int]:
    """The epochs (0-based, below ``epochs_done``) a run with this saved config pruned: its schedule's. A selector
    that reads a file (``prior``) is stood in for by ``random``, whose schedule is the same."""
    import warnings

    from ssl_emp.pruning import Pruner, PruningSettings, prunes

    defaults = PruningSettings()
    p = {**defaults.as_dict(), **config.get("pruning", {})}
    settings = PruningSettings(**{k: v for k, v in p.items() if hasattr(defaults, k)})
    if not prunes(settings):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run already said how its schedule was shortened
        schedule = Pruner(
            1000,
            int(config["train"]["epochs"]),
            rate=settings.rate,
            selector="random" if settings.selector == "prior" else settings.selector,
            infobatch_r=settings.infobatch_r,
            warmup_epochs=settings.warmup_epochs,
            anneal=settings.anneal,
        )
    return [e for e in range(epochs_done) if schedule.is_pruned_epoch(e)]


def draw_map(points: torch.Tensor, colours: dict[str, torch.Tensor], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(colours), figsize=(4.2 * len(colours), 4.2), squeeze=False)
    size = max(1.0, 20.0 / math.sqrt(max(len(points), 1) / 100))
    for ax, (name, values) in zip(axes[0], colours.items()):
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        if name in (KEPT_LAST, KEPT_ANY):  # two kinds, two colours and a legend with their counts
            for flag, colour, label in ((0, "lightgrey", "skipped"), (1, "tab:red", "kept")):
                where = values == flag
                ax.scatter(points[where, 0], points[where, 1], c=colour, s=size, linewidths=0)
                ax.scatter([], [], c=colour, label=f"{label} ({int(where.sum())})")
            ax.legend(fontsize="small", loc="best")
            continue
        cmap = "tab20" if name == "cluster" else "viridis"
        shown = ax.scatter(points[:, 0], points[:, 1], c=values.float().numpy(), s=size, cmap=cmap, linewidths=0)
        if name != "cluster":
            fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(
    checkpoint: str,
    data: Optional[str] = None,
    out: Optional[str] = None,
    device: str = "auto",
    clusters: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """Embed, write and draw; returns what was written."""
    from safetensors.torch import save_file

    from ssl_emp.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_path
    from ssl_emp.data import load_bank
    from ssl_emp.device import resolve_device
    from ssl_emp.evaluation import adapt_bank, extract_features, load_pretrained
    from ssl_emp.pruning.clustering import Ranks, Shard, cluster

    dev = resolve_device(device)
    pretrained = load_pretrained(checkpoint, dev)
    saved = pretrained.config["data"]
    own = data is None
    if own:
        name, root = saved["name"], saved.get("root")
    elif Path(data).is_dir():
        name, root = "imagefolder", data
    else:
        name, root = data, None
    size = pretrained.data_info["image_size"] if own else None
    bank = load_bank(name, root, "train", size, saved.get("subset") if own else None, skip_unreadable=True)
    bank, _ = adapt_bank(bank, pretrained.data_info["channels"], pretrained.data_info["image_size"])
    features, _ = extract_features(pretrained.backbone, pretrained.normalize, bank.to(dev), dev)
    features = features.float().cpu()
    unit = torch.nn.functional.normalize(features, dim=1)
    n = len(unit)
    made = cluster(Shard(unit, torch.arange(n), n, Ranks()), clusters or 0, torch.Generator().manual_seed(seed))
    out_dir = Path(out) if out else resolve_checkpoint_path(checkpoint).parent.parent / "embed"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": features.contiguous(), "index": torch.arange(n)}, str(out_dir / "embeddings.safetensors"))

    columns: dict[str, torch.Tensor] = {"cluster": made.assignment}
    table, ckpt = None, {}
    resolved = resolve_checkpoint_path(checkpoint)
    if resolved.suffix == ".pt":  # a run's checkpoint holds its score table; an exported backbone does not
        try:
            ckpt = load_checkpoint(resolved)
            table = ckpt.get("pruning", {}).get("table")
        except CheckpointError:
            table = None
    if own and table is not None and table["visits"].numel() == n:
        done = int(ckpt["epoch"])
        pruned = pruned_epochs(pretrained.config, done)
        visits = table["visits"].cpu()
        columns["visits"] = visits
        columns["final score"] = torch.nan_to_num(table["scores"].cpu().float(), nan=0.0)
        last_epoch = table["last_epoch"].cpu()
        if pruned and pruned[-1] == done - 1:
            columns[KEPT_LAST] = (last_epoch == done - 1).long()
        elif pruned:  # full-data epochs came after: which samples the pruned epochs ever kept
            columns[KEPT_ANY] = (visits - (done - len(pruned)) > 0).long()
    paths = bank.paths  # the file of each image the folder loader kept (empty for a named dataset)
    with open(out_dir / "embeddings.csv", "w", newline="") as f:
        writer = csv.writer(f)
        header = ["index", *(["path"] if paths else []), *columns] + (["last_epoch"] if "visits" in columns else [])
        writer.writerow(header)
        for i in range(n):
            values = (float(c[i]) if c.is_floating_point() else int(c[i]) for c in columns.values())
            row = [i, *([paths[i]] if paths else []), *values]
            writer.writerow(row + ([int(last_epoch[i])] if "visits" in columns else []))
    points, method = two_d(unit, seed)
    title = f"{n} images of {name} embedded by {resolve_checkpoint_path(checkpoint).parent.parent.name} ({method})"
    draw_map(points, columns, title, out_dir / "map.png")
    return {"out": str(out_dir), "images": n, "dim": features.shape[1], "map": method, "coloured_by": list(columns)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-emp-embed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", metavar="RUN", help="a run directory or checkpoint")
    parser.add_argument("--data", help="a folder or dataset name to embed instead of the run's own data")
    parser.add_argument("--out", help="where to write (default: RUN/embed)")
    parser.add_argument("--clusters", type=int, help="k-means clusters to colour by (default sqrt(N))")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-wandb", action="store_true", help="do not send the map to W&B")
    args = parser.parse_args(argv)
    from ssl_emp.checkpoint import CheckpointError
    from ssl_emp.data import DatasetNotFoundError, UnreadableImageError

    try:
        written = run(args.checkpoint, args.data, args.out, args.device, args.clusters, args.seed)
    except (CheckpointError, DatasetNotFoundError, UnreadableImageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_wandb:
        from eval.report import log_image_to_wandb
        from ssl_emp.checkpoint import resolve_checkpoint_path

        run_dir = resolve_checkpoint_path(args.checkpoint).parent.parent
        log_image_to_wandb(Path(written["out"]) / "map.png", run_dir, "embed", "embed/map")
    print(
        f"{written['images']} embeddings ({written['dim']}-d) and a {written['map']} map coloured by "
        f"{', '.join(written['coloured_by'])}, written to {written['out']} (embeddings.safetensors, embeddings.csv, "
        "map.png)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
