#!/usr/bin/env bash
# Session 7: Gluon backward with dQ one tile behind (3 dS buffers; the two consumer
# warpgroups drift up to a tile apart instead of meeting on every tile), LSE / Delta loads
# before the slot wait. GPU tests, then the A/B at d128. Results -> $OUT/s7e.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -x tests/test_gpu_hopper_backward.py > "$R/test_bwd.txt" 2>&1
tail -3 "$R/test_bwd.txt"; grep -m3 -A30 "Error\|FAILED\|assert" "$R/test_bwd.txt" | head -60
timeout 250 python3 benchmarks/gluon_bwd_ab.py --out "$R" --seqlens 2048 4096 8192 16384 \
    2>&1 | tail -11
tar -C "$R" -cf "$OUT/s7e.tar" .
