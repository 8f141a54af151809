#!/usr/bin/env bash
# Session 7, last call: GPU tests after the preprocess change (row statistics written by the
# Triton preprocess) and the grid change: Gluon backward tests, the Triton GPU suite
# (test_gpu.py), the backward A/B at 2k / 16k, FP8 tests. Results -> $OUT/s7k.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 130 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m3 "^FAILED" "$R/test_bwd.txt"
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py > "$R/test_gpu.txt" 2>&1
tail -1 "$R/test_gpu.txt"; grep -m3 "^FAILED" "$R/test_gpu.txt"
timeout 80 python3 benchmarks/gluon_bwd_ab.py --out "$R" --head-dims 64 128 --seqlens 2048 16384 \
    2>&1 | tail -11
timeout 40 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu_fp8.py > "$R/test_fp8.txt" 2>&1
tail -1 "$R/test_fp8.txt"; grep -m3 "^FAILED" "$R/test_fp8.txt"
tar -C "$R" -cf "$OUT/s7k.tar" .
