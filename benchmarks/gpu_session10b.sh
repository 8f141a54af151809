#!/usr/bin/env bash
# Session 10: launch cache, second call. Host time per call (cache on / off, SDPA's
# fwd+bwd beside ours) and the 1k causal forwards / backwards with the Gluon gates;
# cProfile of the host paths (the backward called directly); then the Gluon backward and
# FP8 GPU tests. Results -> $OUT/s10b.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 220 python3 benchmarks/host_launch.py --rounds 5 --out "$R" > "$R/host_launch.txt" 2>&1
tail -32 "$R/host_launch.txt"
timeout 60 python3 benchmarks/host_profile.py --out "$R" > "$R/host_profile.txt" 2>&1
grep "^==" "$R/host_profile.txt"
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_fp8.py \
    > "$R/test_fp8.txt" 2>&1
tail -1 "$R/test_fp8.txt"; grep -m5 "^FAILED" "$R/test_fp8.txt"
tar -C "$R" -cf "$OUT/s10b.tar" .
