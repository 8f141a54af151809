#!/usr/bin/env bash
# Session 9: where flashtile's host time per call goes on the H200 host (the suite's 1k
# causal forwards, timed with autograd recording, are host-bound: 179-181 TFLOP/s).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 benchmarks/host_profile.py --out "$R" > "$R/host_profile.txt" 2>&1
grep -A22 "== forward_grad" "$R/host_profile.txt" | cut -c1-150
grep "== " "$R/host_profile.txt"
timeout 60 python3 benchmarks/diagnose.py --host-only 2>&1 | tail -8
timeout 60 python3 benchmarks/outlier_d128_causal_1k.py 2>&1 | tail -6
tar -C "$R" -cf "$OUT/s9g.tar" .
