#!/usr/bin/env bash
# Session 7: GPU tests after the grid change (batch * heads past 65535 continues on axis 2):
# the Gluon backward tests (with the 4100 x 16 grid test for both kernels), the Gluon
# forward tests, then as much of test_gpu.py (Triton kernels) as fits. -> $OUT/s7h.tar
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 -m pytest -q tests/test_gpu_hopper_backward.py > "$R/test_bwd.txt" 2>&1
tail -2 "$R/test_bwd.txt"; grep -m3 -A25 "Error\|FAILED" "$R/test_bwd.txt" | head -40
timeout 200 python3 -m pytest -q tests/test_gpu_hopper.py > "$R/test_fwd.txt" 2>&1
tail -2 "$R/test_fwd.txt"; grep -m3 FAILED "$R/test_fwd.txt"
timeout 120 python3 -m pytest -q -x tests/test_gpu.py -k "test_options or test_long or varlen or masked" > "$R/test_gpu.txt" 2>&1
tail -2 "$R/test_gpu.txt"; grep -m3 FAILED "$R/test_gpu.txt"
tar -C "$R" -cf "$OUT/s7h.tar" .
