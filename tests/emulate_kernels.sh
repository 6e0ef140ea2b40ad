#!/usr/bin/env bash
# Run the tests marked `kernels` under emulated CPU kernels, at 1 and 2 threads each: the suite must hold on any
# x86-64 CPU, not only on the one it was written on (issue 30).
#   bash tests/emulate_kernels.sh PYTHON NAME...   (names below; `make test-kernels` passes them all)
set -euo pipefail
python=$1
shift
for name in "$@"; do
  case $name in
    avx2) emulate=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2) ;;  # an AVX2-only CPU
    default) emulate=(ATEN_CPU_CAPABILITY=default) ;;  # torch's own kernels without vector dispatch
    onednn-avx2) emulate=(ONEDNN_MAX_CPU_ISA=AVX2) ;;  # oneDNN (convolutions) without AVX-512
    onednn-sse41) emulate=(ONEDNN_MAX_CPU_ISA=SSE41) ;;  # oneDNN on a pre-AVX CPU
    mkl-avx2) emulate=(MKL_ENABLE_INSTRUCTIONS=AVX2) ;;  # MKL (matmul) without AVX-512
    *) echo "unknown kernel emulation '$name'; known: avx2 default onednn-avx2 onednn-sse41 mkl-avx2" >&2; exit 2 ;;
  esac
  for threads in 1 2; do
    echo "== kernels=$name threads=$threads: ${emulate[*]} OMP_NUM_THREADS=$threads"
    env "${emulate[@]}" OMP_NUM_THREADS=$threads "$python" -m pytest -q -m kernels -p no:cacheprovider
  done
done
