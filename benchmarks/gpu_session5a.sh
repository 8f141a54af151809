#!/usr/bin/env bash
# Session 5, first call: the GPU suites after bf947f7 (no TMA loads with 32-bit gradient
# stores on 64-bit spans; 64-bit head offsets), then the d256 dK/dV kernel re-timed at 8k
# (session 4 measured 207 / 219 TFLOP/s non-causal / causal). Results -> $OUT/s5a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fp8.py tests/test_decode.py > "$R/gpu_tests_session5.log" 2>&1
tail -1 "$R/gpu_tests_session5.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests_session5.log" | head -8
timeout 150 python3 benchmarks/bwd_variants.py --dims 256 --kernels dkdv --seqlens 8192 \
    --out "$R" 2>&1 | tail -6
tar -C "$R" -cf "$OUT/s5a.tar" .
