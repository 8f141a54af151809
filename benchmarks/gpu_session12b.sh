#!/usr/bin/env bash
# Session 12, call b: launch plans for the Triton backward's dK/dV and dQ launches: the GPU
# suites over the Triton backward (every option) and the launcher, then plans on / off host
# us per call; two config A/Bs: the d256 forward's query-block order at 1k-4k (table row:
# not longest-first) and three ring slots for the d128 Gluon backward.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 250 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py tests/test_launcher.py \
    > "$R/test_gpu.txt" 2>&1
tail -1 "$R/test_gpu.txt"; grep -m8 "^FAILED" "$R/test_gpu.txt"
cd benchmarks
timeout 70 python3 host_plans.py --rounds 4 --host-only --out "$R" > "$R/host_plans.txt" 2>&1
tail -12 "$R/host_plans.txt"
mkdir -p "$R/fwd256" "$R/bwd128"
timeout 90 python3 fwd_variants.py --out "$R/fwd256" --head-dims 256 --seqlens 1024,2048,4096 \
    --variants "256,128,64,8,2,0,0;256,128,64,8,2,0,1" > "$R/fwd256.txt" 2>&1
tail -16 "$R/fwd256.txt"
timeout 120 python3 gluon_bwd_ab.py --out "$R/bwd128" --head-dims 128 \
    --seqlens 2048 4096 16384 --config 2,240,24 3,240,24 > "$R/bwd128.txt" 2>&1
tail -10 "$R/bwd128.txt"
