"""What ran the benchmark's second sitting (2026-11-30): the pinned benchmark's planned runs from two processes.

Kept as the record of how those runs were made, not as a tool: it expects the pinned worktree at /work/bench.
``python sitting_driver.py NAME`` (one per process, NAME telling their record files apart).

The benchmark's own loop is one process; this lets two single-threaded processes (the recorded thread count)
share the same plan, decided over all regimes from every record so far: before each run a worker re-reads every
record file and claims the first unclaimed planned run with an exclusive-create file. Each worker writes its own
record file; all are merged into pruning_quality.jsonl after. Lives outside the worktree, which stays clean.
For its first 25 minutes an earlier form ran instead: each process took only two regimes' planned runs (the
same plan, decided over all four regimes, filtered by regime), without re-reading the other's records.
"""
import hashlib, json, os, sys, tempfile, importlib.util
from pathlib import Path

ROOT = Path("/work/bench")
spec = importlib.util.spec_from_file_location("pq", ROOT / "benchmarks" / "pruning_quality.py")
pq = importlib.util.module_from_spec(spec); sys.modules["pq"] = pq; spec.loader.exec_module(pq)
import torch

results = ROOT / "benchmarks" / "results"
own = results / f"worker-{sys.argv[1]}.jsonl"
claims = Path("/work/claims"); claims.mkdir(exist_ok=True)
torch.set_num_threads(1)
commit = pq.current_commit()
assert not commit.endswith("+dirty"), commit
cache = {}
def data_for(regime):
    if regime not in cache:
        cache[regime] = pq.load_regime(regime)
    return cache[regime]
def all_records():
    out = []
    for f in [results / "pruning_quality.jsonl", *sorted(results.glob("worker-*.jsonl"))]:
        out += [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    return out
with tempfile.TemporaryDirectory() as workdir:
    while True:
        records = all_records()
        done = {pq._key(r) for r in records}
        todo = [(k, o) for k, o in pq.planned_runs(list(pq.REGIMES), records, data_for) if pq._key(k) not in done]
        picked = None
        for k, o in todo:
            claim = claims / hashlib.sha1(repr(pq._key(k)).encode()).hexdigest()
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            picked = (k, o)
            break
        if picked is None:
            break
        key, overrides = picked
        record = pq.run_one(key, overrides, data_for(key["regime"]), workdir, 50, commit)
        with open(own, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[{len(todo) - 1} left] {key['regime']:13s} {key['stage']:9s} {key['method']:28s} rate "
              f"{key['requested_rate']} seed {key['seed']}: achieved {record['achieved_rate']:.3f}, "
              f"test {pq.metric(record, 'test'):.4f}, {record['train_seconds']:.0f} s", flush=True)
print("done", flush=True)
