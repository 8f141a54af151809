#!/usr/bin/env bash
# Session 6, last: d128 launch rows at 1k (the 128-key row looked slow there), then the
# Gluon GPU tests to completion. Results -> $OUT/s6l.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 benchmarks/gluon_variants.py --out "$R" --seqlen 1024 --head-dim 128 \
    --variants 64,3,232,40 128,3,240,24 2>&1 | tail -7
timeout 300 python3 -m pytest -q tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -2 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head -3
tar -C "$R" -cf "$OUT/s6l.tar" .
