#!/usr/bin/env bash
# Session 6: d128 row now 128-key tiles x 3 slots (O staged in Q's tiles): Gluon GPU
# tests, then the full A/B table (bf16 + FP8). Results -> $OUT/s6k.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 250 python3 -m pytest -q -x tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -2 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head -3
timeout 300 python3 benchmarks/gluon_ab.py --fp8 --out "$R" 2>&1 | tail -24
tar -C "$R" -cf "$OUT/s6k.tar" .
