#!/usr/bin/env bash
# Session 5, extra call: spill-free dK/dV tile shapes at d64 / d128 (32x128 w8) against the
# table rows, 2k and 8k, causal and not. Results -> $OUT/s5f.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 400 python3 benchmarks/bwd_variants.py --dims 64,128 --kernels dkdv --seqlens 2048,8192 \
    --out "$R" 2>&1 | tail -28
tar -C "$R" -cf "$OUT/s5f.tar" .
