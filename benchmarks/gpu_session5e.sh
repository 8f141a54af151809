#!/usr/bin/env bash
# Session 5, last call: GPU suites after the per-config launch order, the FP8 table through
# the CLI (`bench --fp8`), the quick benchmark suite (README charts). Results -> $OUT/s5e.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 230 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fp8.py > "$R/gpu_tests_session5e.log" 2>&1
tail -1 "$R/gpu_tests_session5e.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests_session5e.log" | head -8
timeout 100 python3 -m flashtile bench --fp8 --out "$R" 2>&1 | tail -14
timeout 225 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 180 2>&1 | grep -E "^bf16 +(64|128|256) +(4k|16k)|suite:"
tar -C "$R" -cf "$OUT/s5e.tar" .
