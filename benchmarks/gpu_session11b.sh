#!/usr/bin/env bash
# Session 11, call b: launch plans (PlanCache / BoundLaunch) in the Triton forward, the
# Gluon forward and backward and the preprocess: GPU tests over those paths, then the
# plans on / off A/B (host us per call, suite 1k rows) with SDPA in the same process.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 140 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    -k "test_options or test_varlen or cuda_graph or probs or dropout or fp16" \
    > "$R/test_gpu_subset.txt" 2>&1
tail -1 "$R/test_gpu_subset.txt"; grep -m5 "^FAILED" "$R/test_gpu_subset.txt"
timeout 110 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper.py \
    > "$R/test_fwd.txt" 2>&1
tail -1 "$R/test_fwd.txt"; grep -m5 "^FAILED" "$R/test_fwd.txt"
timeout 120 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
cd benchmarks && timeout 190 python3 host_plans.py --rounds 4 --out "$R" > "$R/host_plans.txt" 2>&1
tail -60 "$R/host_plans.txt"
tar -C "$R" -cf "$OUT/s11b.tar" .
