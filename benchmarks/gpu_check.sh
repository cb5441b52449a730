#!/bin/sh
# The prepared GPU check (benchmarks/gpu_check.py): a few minutes on one GPU. It trains the CIFAR-10
# 2S supernet with TRADES-YOPO-5-3 for 200 steps in float32 and in bf16-mixed, compares YOPO's
# gradients under bf16 autocast with float32/float64 on the same batch, runs a search trial and one
# retrain epoch, and prints img/s and per-stage times as JSON on stdout (logs on stderr).
#
#   benchmarks/gpu_check.sh                          # CIFAR-10 from ./data if there, else synthetic
#   benchmarks/gpu_check.sh --data-root /data/cifar  # any flag of python -m benchmarks.gpu_check
#   benchmarks/gpu_check.sh --device cpu --steps 2 --batch-size 8 --workers 0   # no GPU: tiny, on the CPU
#
# Exit codes: 0 done, 2 usage error, 3 no CUDA device, 4 bf16's YOPO disagrees with float64,
# 5 bf16-mixed supernet training hit a NaN loss (the other stages still ran).
# The JSON is also written to $OUT/gpu_check.json when OUT is set (e.g. the device machine's output folder).
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
has_root=no
for a in "$@"; do [ "$a" = --data-root ] && has_root=yes; done
[ "$has_root" = yes ] || set -- --data-root "${TAMNAS_DATA:-data}" "$@"
if [ -n "${OUT:-}" ]; then
  rc=0
  "$PY" -m benchmarks.gpu_check "$@" > "$OUT/gpu_check.json" || rc=$?
  cat "$OUT/gpu_check.json"
  exit "$rc"
fi
exec "$PY" -m benchmarks.gpu_check "$@"
