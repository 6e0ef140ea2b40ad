#!/usr/bin/env bash
# The prepared GPU science experiment (benchmarks/gpu_science.py): about 10 minutes on one H100/H200. Run it the
# moment an issue is lent a GPU, after make gpu-check.
#
#   GPU_WHEELS=wheels bash benchmarks/gpu_science.sh --data-root gpu-data   # or: make gpu-science
#   bash benchmarks/gpu_science.sh --tiny                                   # CPU-sized; the tests run it
#
# Options: --tiny; --wheels DIR (default $GPU_WHEELS); --results DIR (default benchmarks/results; with --tiny a
# temporary folder, so committed results are never overwritten); --data-root DIR (default data: CIFAR-100 in
# DIR/cifar-100-python, else Fashion-MNIST's IDX files, gzipped or not, in DIR/FashionMNIST/raw; `make gpu-data`
# puts the latter, 30 MB, in gpu-data/ to carry); anything after -- goes to gpu_science.py (--minutes, --epochs).
# Environment: PYTHON (default .venv/bin/python where it exists, else python3).
#
# On the device machine:  GPU_WHEELS=wheels bash benchmarks/gpu_science.sh --data-root gpu-data --results $OUT
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=0
WHEELS="${GPU_WHEELS:-}"
RESULTS=""
DATA_ROOT=data
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --results) RESULTS="${2:?--results needs a folder}"; shift ;;
        --data-root) DATA_ROOT="${2:?--data-root needs a folder}"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_science: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1
# shellcheck source=benchmarks/gpu_packages.sh
source benchmarks/gpu_packages.sh
install_missing_packages gpu_science || exit 1
ARGS=(--data-root "$DATA_ROOT")
if [ "$TINY" = 1 ]; then
    ARGS+=(--tiny --results "${RESULTS:-$(mktemp -d)}")
else
    ARGS+=(--results "${RESULTS:-benchmarks/results}")
fi
echo "$PYTHON benchmarks/gpu_science.py ${ARGS[*]}${EXTRA[*]:+ ${EXTRA[*]}}"
exec "$PYTHON" benchmarks/gpu_science.py "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
