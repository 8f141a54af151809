#!/usr/bin/env bash
# Session 6, first run of the Gluon forward: its GPU tests, the FP8 tests (which now
# take it for d64 / d128), then the A/B timing. Results -> $OUT/s6a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q -x tests/test_gpu_hopper.py 2>&1 | tail -15
timeout 100 python3 -m pytest -q tests/test_gpu_fp8.py 2>&1 | tail -6
timeout 240 python3 benchmarks/gluon_ab.py --fp8 --out "$R" 2>&1 | tail -28
tar -C "$R" -cf "$OUT/s6a.tar" .
