#!/usr/bin/env bash
# Session 4, first device call: GPU tests (64-bit offsets), d256 dK/dV re-time, decode sweep.
# Results -> $OUT/s4.tar. Usage: bash benchmarks/gpu_session4.sh
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py tests/test_gpu_fp8.py \
    tests/test_decode.py > "$R/gpu_tests_session4.log" 2>&1
tail -2 "$R/gpu_tests_session4.log"; grep -E "^FAILED" "$R/gpu_tests_session4.log" | head -8
timeout 90 python3 benchmarks/bwd_variants.py --dims 256 --kernels dkdv --seqlens 8192 \
    --out "$R" 2>&1 | tail -12
timeout 200 python3 benchmarks/decode_sweep.py --out "$R" --budget 160 2>&1 | grep -v "^\[" | tail -30
tar -C "$R" -cf "$OUT/s4.tar" .
