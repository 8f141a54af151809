#!/usr/bin/env bash
# Session 6: the Gluon forward's GPU tests after the d128 row moved to 64-key tiles,
# verbose, to a file; then the Triton FP8 tests. Results -> $OUT/s6d.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 -m pytest -v --durations=5 tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -12 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head
timeout 120 python3 -m pytest -q tests/test_gpu_fp8.py 2>&1 | tail -3
tar -C "$R" -cf "$OUT/s6d.tar" .
