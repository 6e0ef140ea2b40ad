#!/usr/bin/env bash
# The prepared GPU check: at most about 8 minutes on one H100/H200, run from anywhere in the checkout.
#
#   GPU_WHEELS=wheels bash benchmarks/gpu_check.sh      # or: make gpu-check (GPU_WHEELS defaults to wheels)
#   bash benchmarks/gpu_check.sh --tiny                 # CPU-sized; the tests run it so the script cannot rot
#
# Options: --tiny; --wheels DIR (default $GPU_WHEELS); --results DIR (default benchmarks/results; with --tiny
# a temporary folder, so committed results are never overwritten); anything after -- goes to throughput.py.
# Environment: PYTHON (default .venv/bin/python where it exists, else python3).
#
#  0. Packages: the GPU image lacks some of ours. Each missing one (checked by importing it) is installed from
#     the carried wheels, `pip install --no-index --no-deps --find-links DIR`, and named here; nothing comes
#     from the network. `make gpu-wheels` downloads them, at this venv's versions, for the image's Python 3.12.
#     wandb is not carried: tracking is off here (WANDB_MODE=disabled) and nothing imports it then.
#  a. The GPU-only tests: those named *gpu* or *cuda* (pytest -k "gpu or cuda"; they skip without CUDA).
#     With --tiny: only that the selection still finds them.
#  b. benchmarks/throughput.py: SimCLR and MoCo, ResNet-18, 32 px, batch 512, bf16 autocast ("amp"), beside
#     lightly's reference loop; writes <results>/throughput_<device>.json and .md. With --tiny: its --tiny mode.
#  c. The sync-debug pass: steps of a pruned epoch (EMP scores, InfoBatch) under
#     torch.cuda.set_sync_debug_mode("error"), run inside (b) for each method: 0 syncs, or the first
#     synchronising call by file and line. Skipped on the CPU.
#  d. benchmarks/selection_scale.py on the device: one refresh of the coverage selector's memory at 100k, 1.28M
#     and 10M samples (d=128); writes <results>/selection_scale_<device>.json and .png. With --tiny: 10k on the CPU.
#
# On the device machine, with the wheels carried:  GPU_WHEELS=wheels bash benchmarks/gpu_check.sh --results $OUT
# Exit status 0 only if every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=0
WHEELS="${GPU_WHEELS:-}"
RESULTS=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --results) RESULTS="${2:?--results needs a folder}"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1
FAILED=()
START=$SECONDS
stage() { echo; echo "== $1 ($((SECONDS - START)) s)"; }

stage "0. packages ($PYTHON)"
"$PYTHON" -c 'import sys, torch
cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA device: {cuda}")' || exit 1
if [ "$TINY" = 0 ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: no CUDA device here; on a CPU run: bash benchmarks/gpu_check.sh --tiny" >&2
    exit 1
fi
# shellcheck source=benchmarks/gpu_packages.sh
source benchmarks/gpu_packages.sh
install_missing_packages gpu_check || exit 1
if ! "$PYTHON" -c 'import kornia, lightly.loss, pydantic, ssl_emp.build'; then
    echo "gpu_check: the project does not import (see above)" >&2
    exit 1
fi

stage "a. GPU-only tests (pytest -k 'gpu or cuda')"
if [ "$TINY" = 1 ]; then
    COLLECTED=$("$PYTHON" -m pytest --collect-only -q -p no:cacheprovider -k "gpu or cuda" tests 2>&1 | grep -c '::')
    echo "skipped on the CPU (--tiny): $COLLECTED test(s) selected for the GPU run"
    [ "$COLLECTED" -gt 0 ] || FAILED+=("a: no GPU tests selected")
else
    timeout 120 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -k "gpu or cuda" tests || FAILED+=("a: GPU tests")
fi

stage "b. throughput"
if [ "$TINY" = 1 ]; then
    RESULTS="${RESULTS:-$(mktemp -d)}"
    ARGS=(--tiny --images 256 --batch-size 64 --steps 2 --repeats 1 --warmup 1 --epoch-repeats 1 --workers 1
          --stream-images 128)
    LIMIT=600
else
    RESULTS="${RESULTS:-benchmarks/results}"
    ARGS=(--methods simclr moco --backbones resnet18 --shapes cifar --variants amp --batch-size 512 --no-data-paths)
    LIMIT=360
fi
mkdir -p "$RESULTS"
MARK=$(mktemp)
echo "$PYTHON benchmarks/throughput.py ${ARGS[*]}${EXTRA[*]:+ ${EXTRA[*]}} --results-dir $RESULTS"
timeout "$LIMIT" "$PYTHON" benchmarks/throughput.py "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"} --results-dir "$RESULTS" \
    || FAILED+=("b: throughput")
JSON=$(find "$RESULTS" -maxdepth 1 -name 'throughput_*.json' -newer "$MARK" | head -n 1)
rm -f "$MARK"

stage "c. sync-debug pass (pruned steps under torch.cuda.set_sync_debug_mode('error'))"
if [ -z "$JSON" ]; then
    echo "no results: the throughput stage wrote none"
    FAILED+=("c: no results")
else
    "$PYTHON" - "$JSON" <<'PY' || FAILED+=("c: host syncs")
import json
import sys

failed = False
for r in json.load(open(sys.argv[1]))["records"]:
    syncs, what = r["host_syncs"], f"{r['method']} {r['backbone']} {r['variant']}"
    if syncs == 0:
        print(f"{what}: 0 syncs over {r['sync_check_steps']} steps of a pruned epoch")
    elif str(syncs).startswith("skipped"):
        print(f"{what}: {syncs} (skipped on the CPU)")
    else:
        failed = True
        print(f"{what}: FAILED, {syncs}")
sys.exit(failed)
PY
    echo "results: $JSON and ${JSON%.json}.md"
fi

stage "d. selection at scale"
if [ "$TINY" = 1 ]; then
    SCALE=(--sizes 10000 --dims 128 --repeats 1 --device cpu)
else
    SCALE=(--sizes 100000 1280000 10000000 --dims 128 --repeats 3 --device cuda)
fi
echo "$PYTHON benchmarks/selection_scale.py ${SCALE[*]} --agreement --results-dir $RESULTS"
timeout 300 "$PYTHON" benchmarks/selection_scale.py "${SCALE[@]}" --agreement --results-dir "$RESULTS" \
    || FAILED+=("d: selection scale")

stage "done"
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu_check: all stages passed in $((SECONDS - START)) s"
else
    echo "gpu_check: FAILED (${FAILED[*]}) after $((SECONDS - START)) s"
    exit 1
fi
