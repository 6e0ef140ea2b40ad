"""One benchmark run: a real pretraining run, then a linear probe trained on a labelled set and read on the
validation split (for every choice) and the test split (for what is reported), and the record of both. Each
record carries what its numbers depend on besides the code: the commit, the CPU capability torch dispatches to,
the CPU model, torch's version and threads."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from pruning_quality.regimes import ALL_REGIMES, DATA_ROOT, ROOT, RegimeData, load_regime, oracle_weights
from ssl_emp.build import pretrain
from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.config import load_pretrain_config
from ssl_emp.evaluation.features import extract_features
from ssl_emp.evaluation.linear_classifier import train_linear_classifier
from ssl_emp.evaluation.pretrained import load_pretrained
from ssl_emp.pruning import achieved_rate

COMMON = ["train.checkpoint_every=100000", "monitor.every=0", "tracking.wandb=disabled"]
FAIR = ["pruning.warmup_epochs=1", "pruning.anneal=0"]  # the same warm-up, no anneal: selection alone
ORACLE_FILE = "{oracle}"  # stands for the regime's oracle weights in a run's overrides (written at run time)
ORACLE = ["pruning.selector=prior", f"pruning.prior_file={ORACLE_FILE}"]


def current_commit() -> str:
    """HEAD, with ``+dirty`` when the code a run depends on differs from it (the summary refuses those)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "ssl_emp", "eval", "configs", "benchmarks/pruning_quality"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    return head + ("+dirty" if dirty.strip() else "")


def machine() -> dict:
    """What a record's numbers depend on besides the code and the seed: the same run on another CPU kernel (AVX2
    against AVX-512, say) or torch release sums in another order and ends a little elsewhere."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": model,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def accuracy(logits: torch.Tensor, labels: torch.Tensor, classes: int, rarest: list[int]) -> dict:
    correct = (logits.argmax(1) == labels).float()
    per_class = [
        correct[labels == c].mean().item() if bool((labels == c).any()) else float("nan") for c in range(classes)
    ]
    result = {"top1": correct.mean().item(), "balanced_acc": statistics.mean(per_class), "per_class": per_class}
    if rarest:
        result["rare3"] = statistics.mean(per_class[c] for c in rarest)
    return result


def probe(checkpoint: Path, data: RegimeData, probe_epochs: int, random_init: bool = False, seed: int = 0) -> dict:
    """A linear probe on the backbone's frozen features: trained on ``probe_train``, read on the validation and
    test splits."""
    device = torch.device("cpu")
    pretrained = load_pretrained(str(checkpoint), device, random_init=random_init, seed=seed)
    features = {
        name: extract_features(pretrained.backbone, pretrained.normalize, bank, device, desc=name)
        for name, bank in (("train", data.probe_train), ("validation", data.validation), ("test", data.test))
    }
    classes = data.pool.num_classes
    classifier = train_linear_classifier(*features["train"], classes, epochs=probe_epochs, seed=0)
    with torch.no_grad():
        return {
            split: accuracy(classifier(features[split][0]), features[split][1], classes, data.rarest)
            for split in ("validation", "test")
        }


def run_name(key: dict) -> str:
    text = (
        f"{key['regime']}-{key['stage']}-{key['method']}-r{key['requested_rate']}-s{key['seed']}-e{key.get('epochs')}"
    )
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def with_oracle_file(overrides: list[str], data: RegimeData, workdir: str, regime: str) -> list[str]:
    """``overrides`` with the oracle's placeholder replaced by a file of the regime's oracle weights."""
    if not any(ORACLE_FILE in o for o in overrides):
        return overrides
    path = Path(workdir) / f"oracle-{regime}.pt"
    if not path.is_file():
        torch.save(oracle_weights(data), path)
    return [o.replace(ORACLE_FILE, str(path)) for o in overrides]


def run_one(key: dict, overrides: list[str], data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """One pretraining run and its probe; returns the record (``key`` plus what was measured)."""
    regime = ALL_REGIMES[key["regime"]]
    cfg = load_pretrain_config(
        ROOT / regime.recipe,
        [
            *regime.overrides,
            *COMMON,
            *([] if "pruning.selector=full" in overrides else FAIR),
            f"train.epochs={key['epochs']}",
            *with_oracle_file(overrides, data, workdir, key["regime"]),
            f"train.seed={key['seed']}",
            f"run.out_dir={workdir}",
            f"run.name={run_name(key)}",
            f"data.root={DATA_ROOT}",
        ],
    )
    started = time.perf_counter()
    result = pretrain(cfg, recipe=run_name(key), show_progress=False, train_bank=data.pool)
    train_seconds = time.perf_counter() - started
    measured = probe(result.checkpoint, data, probe_epochs)
    rhos = [h["pruning/memory_spearman"] for h in result.history if h.get("pruning/memory_spearman") is not None]
    spread = {
        name: [h[f"pruning/{name}"] for h in result.history if h.get(f"pruning/{name}") is not None]
        for name in ("effective_sample_share", "target_top10_share")
    }
    full_forwards = key["epochs"] * len(data.pool)  # so full_equal_compute's shorter run counts as pruning
    last = result.history[-1]
    record = {
        **key,
        "overrides": overrides,
        "commit": commit,
        **machine(),
        "achieved_rate": achieved_rate(result.sample_forwards, full_forwards),
        "sample_forwards": result.sample_forwards,
        "train_seconds": round(train_seconds, 2),
        "embedding_forwards": last.get("pruning/embedding_forwards", 0),
        "embedding_seconds": round(last.get("pruning/embedding_seconds", 0.0), 2),
        "final_loss": result.final_loss,
        "visits_gini": last.get("pruning/visits_gini"),
        "memory_spearman": statistics.mean(rhos) if rhos else None,
        **{name: statistics.mean(v) if v else None for name, v in spread.items()},
        **measured,
    }
    visits = load_checkpoint(result.checkpoint)["pruning"]["table"]["visits"].double().cpu()
    for name, flags in (("copy_forward_share", data.is_copy), ("junk_forward_share", data.is_junk)):
        if flags is not None:
            record[name] = (visits[flags].sum() / visits.sum()).item()
    if data.rarest:
        labels = data.pool.labels.cpu()
        record["rare3_forward_share"] = (
            visits[torch.isin(labels, torch.tensor(data.rarest))].sum() / visits.sum()
        ).item()
    shutil.rmtree(result.run_dir, ignore_errors=True)  # hundreds of runs: keep the records, not the folders
    return record


def floor_key(regime: str, seed: int) -> dict:
    return {"regime": regime, "stage": "floor", "method": "floor", "requested_rate": None, "seed": seed}


def floor_record(regime_name: str, seed: int, data: RegimeData, workdir: str, probe_epochs: int, commit: str) -> dict:
    """The random-init floor: the probe on an untrained backbone of the regime's architecture (a 2-image run
    writes the checkpoint that names the architecture; its weights are not used)."""
    regime = ALL_REGIMES[regime_name]
    key = floor_key(regime_name, seed)
    cfg = load_pretrain_config(
        ROOT / regime.recipe,
        [
            *regime.overrides,
            *COMMON,
            "train.epochs=1",
            "train.batch_size=2",
            f"train.seed={seed}",
            f"run.out_dir={workdir}",
            f"run.name={run_name(key)}",
            f"data.root={DATA_ROOT}",
        ],
    )
    result = pretrain(cfg, recipe="floor", show_progress=False, train_bank=data.pool.subset(torch.arange(2)))
    return {
        **key,
        "commit": commit,
        **machine(),
        **probe(result.checkpoint, data, probe_epochs, random_init=True, seed=seed),
    }


def rerun(record: dict, probe_epochs: int = 50) -> dict:
    """Run one recorded row again at this checkout (what the reproduce-a-row test checks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(record["threads"])
    key = {k: record[k] for k in ("regime", "stage", "method", "requested_rate", "seed", "epochs")}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            return run_one(key, record["overrides"], load_regime(record["regime"]), workdir, probe_epochs, "rerun")
    finally:
        torch.set_num_threads(threads)
