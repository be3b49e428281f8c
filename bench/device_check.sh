#!/usr/bin/env bash
# The GPU checks of issue 3 as one command for the device machine (its image has torch, numpy and
# scikit-learn; dmdb.regress needs nothing else). Run from the repository root:
#   bash bench/device_check.sh            # about 5-8 minutes on one H200; logs also under $OUT
# 1. correctness and speed on CUDA against the CPU (10,000 x 2,000 x 200, lasso then ridge);
# 2. bench_regress's 50,000 x 10,000 x 1,000 throughput case on CUDA;
# 3. the solver stage of the CIFAR-10 projection's slice (20,000 runs x 50,000 examples x 100 targets).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/dmdb-device}
mkdir -p "$OUT"
step() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/device_check.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device_check.log"
step "$PY" bench/cuda_check.py
step "$PY" bench/cuda_check.py --ridge
step "$PY" bench/bench_regress.py --runs 50000 --n-train 10000 --targets 1000 --no-sklearn --patience 10 --device cuda
step "$PY" bench/cuda_check.py --runs 20000 --n-train 50000 --targets 100 --no-cpu
