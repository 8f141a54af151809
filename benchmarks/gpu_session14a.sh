#!/usr/bin/env bash
# Prepared in session 13 (not run yet), first call of the next session (#7): FP8 d256 on
# the Gluon forward with 128-key tiles (row 128,2,2,240,24: 224 KB of shared memory, 64 B
# of spills outside the loop offline) against the 64-key rows and the Triton FP8 kernel;
# the "bf16" column is the shipped bf16 forward (Gluon at d256 since session 13). Then
# fp8_bench.py again, whose JSON / chart still hold session 9's bf16 d256 (Triton) rows.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
cd benchmarks
N=../flashtile/kernels/forward_hopper.py
timeout 200 python3 gluon_fwd_versions.py --out "$R" --head-dim 256 --dtypes fp8 \
    --seqlens 4096 8192 16384 --versions s33=$N@64,3,3,240,24 n128=$N@128,2,2,240,24 \
    > "$R/d256_fp8.txt" 2>&1
tail -9 "$R/d256_fp8.txt"
timeout 200 python3 fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1
tail -16 "$R/fp8_bench.txt"
