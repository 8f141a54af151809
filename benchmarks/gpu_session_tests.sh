#!/usr/bin/env bash
# One device call: FP8 tests + benchmarks, then the GPU test suite. Results -> $OUT/tests.tar
# (one file: the device tool returns at most a few files). Usage: bash benchmarks/gpu_session_tests.sh
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu_fp8.py > "$R/gpu_tests_fp8.log" 2>&1
tail -3 "$R/gpu_tests_fp8.log"; grep -E "^(FAILED|E )" "$R/gpu_tests_fp8.log" | head -8
timeout 120 python3 benchmarks/fp8_bench.py --out "$R" 2>&1 | tail -16
timeout 60 python3 benchmarks/fp8_accuracy.py --out "$R" 2>&1 | tail -10
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
tar -C "$R" -cf "$OUT/tests.tar" .
