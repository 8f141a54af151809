#!/usr/bin/env bash
# Session 5, fourth call: query blocks launched longest first (A/B in one process), the
# FP8 table with TMA rows, then the GPU suites (forward and dQ launch order changed).
# Results -> $OUT/s5d.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 benchmarks/causal_order.py --out "$R" > "$R/causal_order.txt" 2>&1
tail -30 "$R/causal_order.txt"
timeout 110 python3 benchmarks/fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1
tail -15 "$R/fp8_bench.txt"
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fp8.py > "$R/gpu_tests_session5d.log" 2>&1
tail -1 "$R/gpu_tests_session5d.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests_session5d.log" | head -8
tar -C "$R" -cf "$OUT/s5d.tar" .
