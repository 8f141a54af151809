#!/usr/bin/env bash
# Session 7: first run of the Gluon backward (backward_hopper.py): its GPU tests, then the
# backward A/B at d128 (Gluon / Triton / cuDNN / flash). Results -> $OUT/s7b.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -x tests/test_gpu_hopper_backward.py > "$R/test_bwd.txt" 2>&1
tail -3 "$R/test_bwd.txt"; grep -m3 -A30 "Error\|FAILED\|assert" "$R/test_bwd.txt" | head -60
timeout 200 python3 benchmarks/gluon_bwd_ab.py --out "$R" --seqlens 4096 16384 2>&1 | tail -9
tar -C "$R" -cf "$OUT/s7b.tar" .
