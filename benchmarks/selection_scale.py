"""How the selection engine scales: one refresh of the embedding memory (clustering, neighbour counts and a
coverage plan) from 10^4 to 10^7 samples, its time and its peak memory beyond the table, and its agreement with
benchmark v3's exact code.

    .venv/bin/python benchmarks/selection_scale.py                   # the CPU grid (about 25 min on 2 cores)
    .venv/bin/python benchmarks/selection_scale.py --sizes 10000 100000 --dims 128 --agreement 10000
    .venv/bin/python benchmarks/selection_scale.py --device cuda     # on a GPU (make gpu-check runs it)

The embeddings are synthetic with structure: modes of about 2,000 members (cosine about 0.67 between two of a
mode), near-copy bursts holding 30% of the pool in bursts of 10,000 (cosine about 0.99), and 1% isolated
outliers. Each size runs in a fresh process, so its peak resident memory is its own; the table (the memory's
float16 or float32 [N, d]) is allocated before the timed refresh and not counted in "beyond the table". Results
go to ``benchmarks/results/selection_scale_<device>.json`` and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F

from ssl_emp.pruning import clustering as engine
from ssl_emp.pruning.embeddings import EmbeddingMemory, draw_by_credit, target_rates

RESULTS = common.ROOT / "benchmarks" / "results"
THRESHOLD = 0.9  # coverage's default neighbour threshold
RATE = 0.7
BURST = 10_000
BURST_SHARE, OUTLIER_SHARE, MODE_SIZE = 0.3, 0.01, 2000


def synthetic(n: int, d: int, seed: int = 0, dtype=torch.float16, chunk: int = 1 << 18) -> tuple[torch.Tensor, dict]:
    """``(vectors [n, d], what was planted)``: built in chunks, so that nothing beyond the table is held."""
    g = torch.Generator().manual_seed(seed)
    bursts = max(1, round(BURST_SHARE * n / BURST))
    burst_size = min(BURST, int(BURST_SHARE * n))
    outliers = max(1, int(OUTLIER_SHARE * n))
    modes = max(2, n // MODE_SIZE)
    mode_centres = F.normalize(torch.randn(modes, d, generator=g), dim=1)
    burst_centres = F.normalize(torch.randn(bursts, d, generator=g), dim=1)
    kind = torch.zeros(n, dtype=torch.int8)  # 0 mode member, 1 burst, 2 outlier
    kind[: bursts * burst_size] = 1
    kind[bursts * burst_size : bursts * burst_size + outliers] = 2
    kind = kind[torch.randperm(n, generator=g)]
    out = torch.empty(n, d, dtype=dtype)
    for start in range(0, n, chunk):
        k = kind[start : start + chunk]
        noise = torch.randn(k.numel(), d, generator=g) / math.sqrt(d)
        rows = mode_centres[torch.randint(0, modes, (k.numel(),), generator=g)] + 0.7 * noise
        burst_rows = burst_centres[torch.randint(0, bursts, (k.numel(),), generator=g)] + 0.1 * noise
        rows = torch.where((k == 1).unsqueeze(1), burst_rows, rows)
        rows = torch.where((k == 2).unsqueeze(1), noise, rows)
        out[start : start + chunk] = rows.to(dtype)
    return out, {"bursts": bursts, "burst_size": burst_size, "outliers": outliers, "modes": modes}


def coverage_plan(counts: torch.Tensor, power: float, generator: torch.Generator) -> torch.Tensor:
    n = counts.numel()
    keep = n - round(RATE * n)
    rates = target_rates(counts.double().pow(-power), keep)
    credit = -torch.rand(n, dtype=torch.float64, generator=generator)
    return draw_by_credit(rates, credit, keep, generator)


class PeakRSS:
    """The process's peak resident memory while the block runs, read from /proc every 5 ms."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def one_refresh(n: int, d: int, device: torch.device, force_scale: bool = False) -> dict:
    """Time and peak memory of one refresh at (n, d), in this process (``force_scale``: on the scale path even
    where the exact one would run)."""
    memory = EmbeddingMemory(n, seed=0, device=device, exact_limit=0 if force_scale else None)
    vectors, planted = synthetic(n, d, dtype=memory.dtype)
    memory.store(torch.arange(n), vectors, epoch=1)
    del vectors
    table_bytes = memory.vectors.numel() * memory.vectors.element_size()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    phases = {}
    with PeakRSS() as rss:
        started = time.perf_counter()
        clustering = memory.clusters()
        common.sync(device)
        phases["cluster_s"] = time.perf_counter() - started
        counts = memory.neighbour_counts(THRESHOLD)
        common.sync(device)
        phases["neighbours_s"] = time.perf_counter() - started - phases["cluster_s"]
        plan = coverage_plan(counts.cpu(), 1.0, torch.Generator().manual_seed(0))
        total = time.perf_counter() - started
    sizes = torch.bincount(clustering.assignment.cpu())
    row = {
        "n": n,
        "d": d,
        "path": "exact" if clustering.exact else "scale",
        "forced": force_scale,
        "refresh_s": total,
        **phases,
        "plan_s": total - phases["cluster_s"] - phases["neighbours_s"],
        "clusters": clustering.count,
        "largest_cluster": int(sizes.max()),
        "table_bytes": table_bytes,
        "peak_rss_beyond_table_bytes": rss.peak - rss.start,
        "kept": int(plan.numel()),
        "planted": planted,
    }
    if device.type == "cuda":
        row["peak_device_beyond_table_bytes"] = torch.cuda.max_memory_allocated() - before
    return row


def faiss_refresh(n: int, d: int, query_rows: int = 2048) -> dict:
    """The same refresh built from faiss (``pip install faiss-cpu``), as SemDeDup builds it: flat spherical k-means
    into sqrt(N) clusters (faiss's own sampling, 256 points per centroid, 20 iterations), every sample assigned,
    and each sample's neighbours counted by a range search inside its own cluster (an inverted-file index probed
    at one list), in blocks of ``query_rows`` queries so that the pairs it returns fit in memory."""
    import faiss
    import numpy as np

    vectors, _ = synthetic(n, d, dtype=torch.float32)
    x = F.normalize(vectors - vectors.mean(dim=0, keepdim=True), dim=1).numpy()
    del vectors
    faiss.omp_set_num_threads(torch.get_num_threads())
    clusters = max(1, round(math.sqrt(n)))
    with PeakRSS() as rss:
        started = time.perf_counter()
        kmeans = faiss.Kmeans(d, clusters, niter=20, spherical=True, seed=0, max_points_per_centroid=256)
        kmeans.train(x)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(kmeans.centroids)
        index = faiss.IndexIVFFlat(quantizer, d, clusters, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        index.add(x)
        index.nprobe = 1  # a query's own cluster only: its nearest centroid, where add() put its own vector
        cluster_s = time.perf_counter() - started
        counts = np.zeros(n, dtype=np.int64)
        for start in range(0, n, query_rows):
            lims, _, _ = index.range_search(x[start : start + query_rows], THRESHOLD)
            counts[start : start + query_rows] = np.diff(lims)
        total = time.perf_counter() - started
    return {
        "n": n,
        "d": d,
        "engine": f"faiss {faiss.__version__}",
        "clusters": clusters,
        "refresh_s": total,
        "cluster_s": cluster_s,
        "neighbours_s": total - cluster_s,
        "peak_rss_beyond_table_bytes": rss.peak - rss.start,
        "largest_count": int(counts.max()),
    }


def _v3_kmeans(x, clusters, generator, iterations=20):
    """Benchmark v3's k-means at 33f29c4, verbatim: the reference the exact path must reproduce."""
    clusters = min(clusters, x.shape[0])
    centroids = x[torch.randperm(x.shape[0], generator=generator)[:clusters]].clone()
    assignment = torch.full((x.shape[0],), -1, dtype=torch.long)
    for _ in range(iterations):
        new = (x @ centroids.T).argmax(dim=1)
        if torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        occupied = torch.bincount(assignment, minlength=clusters) > 0
        centroids[occupied] = F.normalize(sums[occupied], dim=1)
    return assignment, centroids


def _v3_neighbour_counts(x, assignment, threshold):
    """Benchmark v3's neighbour counts at 33f29c4, verbatim (each cluster's whole square)."""
    counts = torch.ones(x.shape[0], dtype=torch.long)
    order = assignment.argsort(stable=True)
    sizes = torch.bincount(assignment).tolist()
    for members in order.split(sizes):
        if members.numel() > 1:
            block = x[members]
            counts[members] = (block @ block.T >= threshold).sum(dim=1)
    return counts


def v3_counts(vectors: torch.Tensor, seed: int = 0, epoch: int = 1) -> torch.Tensor:
    """v3's whole refresh (normalise, sqrt(N) k-means, counts) on float32 vectors, as its memory ran it."""
    x = F.normalize(vectors - vectors.mean(dim=0, keepdim=True), dim=1)
    generator = torch.Generator().manual_seed(seed * 100_003 + 7919 * (epoch + 1))
    assignment, _ = _v3_kmeans(x, max(1, round(math.sqrt(x.shape[0]))), generator)
    return _v3_neighbour_counts(x, assignment, THRESHOLD)


def true_counts(vectors: torch.Tensor, chunk_rows: int = 2048) -> torch.Tensor:
    """Each sample's near neighbours among all N (every pair compared, in row blocks): the density that clusters
    only approximate, on the vectors as v3 normalised them."""
    x = F.normalize(vectors - vectors.mean(dim=0, keepdim=True), dim=1)
    return torch.cat([(block @ x.T >= THRESHOLD).sum(dim=1) for block in x.split(chunk_rows)])


def _compare(counts: torch.Tensor, reference: torch.Tensor, n: int) -> dict:
    relative = (counts - reference).abs().double() / reference.double()
    row = {
        "identical_share": float((counts == reference).double().mean()),
        "median_relative_error": float(relative.median()),
        "p90_relative_error": float(relative.quantile(0.9)),
    }
    keep = n - round(RATE * n)
    for power in (1.0, 3.0):
        a = target_rates(reference.double().pow(-power), keep)
        b = target_rates(counts.double().pow(-power), keep)
        # the share of an epoch's budget that the two place differently (total variation of the target rates)
        row[f"rate_tv_power{power:g}"] = float((a - b).abs().sum() / (2 * keep))
    return row


def agreement(n: int, d: int) -> dict:
    """At one size: the exact path against v3 (identical counts?), and v3 and the scale path (forced below its
    limit) each against the true density, every pair of the N compared."""
    vectors, _ = synthetic(n, d, dtype=torch.float32)
    reference, truth = v3_counts(vectors), true_counts(vectors)
    exact = EmbeddingMemory(n, seed=0)
    exact.store(torch.arange(n), vectors, epoch=1)
    exact_counts = exact.neighbour_counts(THRESHOLD)
    scaled = EmbeddingMemory(n, seed=0, exact_limit=0)  # the scale path, forced below its limit
    scaled.store(torch.arange(n), vectors, epoch=1)
    started = time.perf_counter()
    scale_counts = scaled.neighbour_counts(THRESHOLD)
    scale_s = time.perf_counter() - started
    return {
        "n": n,
        "d": d,
        "exact_identical_to_v3_share": float((exact_counts == reference).double().mean()),
        "exact_plan_identical_to_v3": bool(
            torch.equal(
                coverage_plan(exact_counts, 1.0, torch.Generator().manual_seed(0)),
                coverage_plan(reference, 1.0, torch.Generator().manual_seed(0)),
            )
        ),
        "scale_clusters": scaled.clusters().count,
        "scale_s": scale_s,
        "v3_vs_truth": _compare(reference, truth, n),
        "scale_vs_truth": _compare(scale_counts, truth, n),
        "scale_vs_v3": _compare(scale_counts, reference, n),
    }


def growth_exponent(rows: list[dict], d: int, path: str, low: int = 100_000) -> float | None:
    """The slope of log time against log N from ``low`` up: over the rows as they run (``path="as run"``: the
    exact path up to its limit) or over the scale path's alone (forced below its limit)."""
    chosen = [
        r
        for r in rows
        if r["d"] == d and r["n"] >= low and (r["path"] == "scale" if path == "scale" else not r["forced"])
    ]
    points = [(math.log(r["n"]), math.log(r["refresh_s"])) for r in chosen]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for d in sorted({r["d"] for r in result["rows"]}):
        exponents = result["growth_exponent"][str(d)]
        for engine_path, style in (("as run", "o-"), ("scale", "x--")):
            rows = sorted(
                (
                    r
                    for r in result["rows"]
                    if r["d"] == d and (r["path"] == "scale" if engine_path == "scale" else not r["forced"])
                ),
                key=lambda r: r["n"],
            )
            exponent = exponents[engine_path]
            left.loglog(
                [r["n"] for r in rows],
                [r["refresh_s"] for r in rows],
                style,
                label=f"d={d} {engine_path} (exponent {exponent or float('nan'):.2f} from 1e5)",
            )
        rows = sorted((r for r in result["rows"] if r["d"] == d and not r["forced"]), key=lambda r: r["n"])
        right.loglog(
            [r["n"] for r in rows], [r["peak_rss_beyond_table_bytes"] / 2**30 for r in rows], "o-", label=f"d={d}"
        )
    left.axvline(engine.EXACT_LIMIT, color="grey", ls=":", lw=1)
    left.text(engine.EXACT_LIMIT, left.get_ylim()[1], " exact | scale", va="top", fontsize=8, color="grey")
    left.set(xlabel="samples N", ylabel="one refresh (s, median)", title=f"Selection refresh on {result['device']}")
    right.set(xlabel="samples N", ylabel="peak memory beyond the table (GiB)", title="Memory beyond the table")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measure(n: int, d: int, device: str, force_scale: bool, repeats: int) -> dict:
    """The median of ``repeats`` refreshes, each in a fresh process (its peak memory its own)."""
    runs = []
    for _ in range(repeats):
        command = [sys.executable, __file__, "--one", str(n), str(d), "--device", device]
        done = subprocess.run(command + (["--force-scale"] if force_scale else []), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"N={n} d={d} failed:\n{done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["refresh_s"])
    row = dict(runs[len(runs) // 2])
    row["refresh_s_runs"] = [r["refresh_s"] for r in runs]
    row["peak_rss_beyond_table_bytes"] = max(r["peak_rss_beyond_table_bytes"] for r in runs)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000, 1_280_000, 3_000_000, 10_000_000]
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--max-n-512", type=int, default=1_280_000, help="largest N run at d=512")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size up to 1.28M (one above)")
    parser.add_argument("--agreement", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", type=int, nargs=2, metavar=("N", "D"), help=argparse.SUPPRESS)
    parser.add_argument("--force-scale", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--faiss",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time the refresh built from faiss at these N (d=128; needs faiss-cpu)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=None, help="the JSON's path (default: in --results-dir)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(one_refresh(args.one[0], args.one[1], device, args.force_scale)))
        return 0
    rows = []
    for d in args.dims:
        for n in args.sizes:
            if d == 512 and n > args.max_n_512:
                continue
            for force_scale in [False, True] if n <= engine.EXACT_LIMIT else [False]:
                try:
                    rows.append(measure(n, d, args.device, force_scale, args.repeats if n <= 1_280_000 else 1))
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 1
                r = rows[-1]
                print(
                    f"N={n:>10,} d={d}: {r['path']:5}{' (forced)' if force_scale else '         '} refresh "
                    f"{r['refresh_s']:8.2f} s (cluster {r['cluster_s']:.2f}, neighbours {r['neighbours_s']:.2f}), "
                    f"{r['clusters']:,} clusters, largest {r['largest_cluster']:,}, beyond the table "
                    f"{r['peak_rss_beyond_table_bytes'] / 2**20:,.0f} MiB",
                    flush=True,
                )
    agreements = []
    for n in args.agreement:
        agreements.append(agreement(n, 128))
        print(f"agreement at N={n:,}: {json.dumps(agreements[-1])}", flush=True)
    alternatives = []
    for n in args.faiss:
        alternatives.append(faiss_refresh(n, 128))
        print(f"faiss at N={n:,}: {json.dumps(alternatives[-1])}", flush=True)
    name = common.slug(common.device_name(device))
    result = {
        "device": common.device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
        "agreement": agreements,
        "faiss": alternatives,
        "growth_exponent": {
            str(d): {path: growth_exponent(rows, d, path) for path in ("as run", "scale")} for d in args.dims
        },
        "command": "benchmarks/selection_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = args.out or args.results_dir / f"selection_scale_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"growth exponents from 1e5: {result['growth_exponent']}; wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
