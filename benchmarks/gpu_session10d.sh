#!/usr/bin/env bash
# Session 10, fourth call: with the launch cache, does the Gluon forward now win at d64 /
# d256 (rows compiled and tested but not dispatched: forward_hopper.ENABLED)? Gluon vs
# Triton vs cuDNN / flash, 1k-16k (benchmarks/gluon_ab.py). Results -> $OUT/s10d.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 benchmarks/gluon_ab.py --out "$R" --head-dims 64 256 \
    --seqlens 1024 2048 4096 16384 > "$R/gluon_ab.txt" 2>&1
tail -22 "$R/gluon_ab.txt"
tar -C "$R" -cf "$OUT/s10d.tar" .
