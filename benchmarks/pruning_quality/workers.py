"""Sittings that resume, shared by processes: each run's record is appended to its worker's file as it ends, the
files are merged atomically where a sitting starts and ends, and a run is claimed by an exclusive-create file so
two workers never make the same one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from pruning_quality.regimes import metric

KEY = ("regime", "stage", "method", "requested_rate", "seed", "epochs")


def key_of(record: dict) -> tuple:
    return tuple(record.get(k) for k in KEY)


RESULTS_FILE, WORKER_FILES = "pruning_quality.jsonl", "pruning_quality.worker-*.jsonl"


def read_records(out_dir: Path) -> list[dict]:
    """Every record: the merged file's, then those the workers of a sitting have written since."""
    records = []
    for path in [out_dir / RESULTS_FILE, *sorted(out_dir.glob(WORKER_FILES))]:
        if path.is_file():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def merge_worker_files(out_dir: Path) -> list[dict]:
    """Fold the workers' record files into the merged file (atomically), so a killed sitting loses nothing, and drop
    the claims: a claimed run with no record (its worker was killed) is not done. Run where a sitting starts and
    ends, with no worker running."""
    records = read_records(out_dir)
    shutil.rmtree(out_dir / ".claims", ignore_errors=True)
    workers = sorted(out_dir.glob(WORKER_FILES))
    if workers:
        tmp = out_dir / (RESULTS_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(out_dir / RESULTS_FILE)
        for path in workers:
            path.unlink()
    return records


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _claim(claims: Path, key: dict) -> bool:
    """Exclusive-create a file named by the run's key: True for the one worker that gets there first."""
    name = hashlib.sha1(repr(key_of(key)).encode()).hexdigest()
    try:
        os.close(os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def work(worker: int, out_dir: Path, plan, run, deadline: Optional[float] = None, wait: float = 10.0) -> int:
    """One worker's share of a sitting. Before each run it re-reads every record, so the plan is decided over all
    of them, and claims the first planned run that no one has recorded or claimed; a run another worker's result
    will unlock (a stage waiting on its rule) is waited for. ``plan(records)`` gives the planned (key, overrides)
    in the order of work; ``run(key, overrides)`` returns the record. Returns the number of runs it made."""
    claims = out_dir / ".claims"
    claims.mkdir(exist_ok=True)
    own, made = out_dir / WORKER_FILES.replace("*", str(worker)), 0
    while deadline is None or time.time() < deadline:
        records = read_records(out_dir)
        done = {key_of(r) for r in records}
        todo = [(k, o) for k, o in plan(records) if key_of(k) not in done]
        if not todo:
            break
        picked = next(((k, o) for k, o in todo if _claim(claims, k)), None)
        if picked is None:  # every planned run is someone's: wait for one that unlocks more, or for the end
            time.sleep(wait)
            continue
        record = run(*picked)
        _append(own, record)
        made += 1
        key = picked[0]
        ran = f"achieved {record['achieved_rate']:.3f}, " if "achieved_rate" in record else ""
        print(
            f"[worker {worker}, {len(todo) - 1} planned] {key['regime']:20s} {key['stage']:7s} "
            f"{key['method']:18s} rate {key['requested_rate']} seed {key['seed']} ({key.get('epochs')} ep): {ran}"
            f"val {metric(record, 'validation'):.4f}, test {metric(record, 'test'):.4f}"
            + (f", {record['train_seconds']:.0f} s" if "train_seconds" in record else ""),
            flush=True,
        )
    return made
