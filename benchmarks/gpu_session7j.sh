#!/usr/bin/env bash
# Session 7: the Gluon backward at head dim 64 (dQ split by keys, not columns): its GPU
# tests (d64 cases first), then the A/B at d64 and d128. Results -> $OUT/s7j.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q tests/test_gpu_hopper_backward.py -k "64 or head_dims or grid" \
    > "$R/test_bwd_d64.txt" 2>&1
tail -2 "$R/test_bwd_d64.txt"; grep -m3 -A25 "Error\|FAILED" "$R/test_bwd_d64.txt" | head -40
timeout 200 python3 benchmarks/gluon_bwd_ab.py --out "$R" --head-dims 64 128 \
    --seqlens 2048 4096 16384 2>&1 | tail -15  # (first run: d64 dQ wrong, see NOTES)
tar -C "$R" -cf "$OUT/s7j.tar" .
