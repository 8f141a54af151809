#!/usr/bin/env bash
# Session 13, call b: the split-ring d256 rows again at 1k-2k (call a's 1k causal s22 read
# 178 against 427 for s32), K / V slot splits 2+2, 3+2, 2+3; and the d64 16-bit rows with
# split rings (3+3, 4+4, 5+5) against the session-12 module and the Triton kernel.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
cd benchmarks
B=base=../.variants/forward_hopper_base.py
N=../flashtile/kernels/forward_hopper.py
timeout 150 python3 gluon_fwd_versions.py --out "$R" --head-dim 256 --dtypes 16bit \
    --seqlens 1024 2048 8192 --versions s22=$N@64,2,2,240,24 s32=$N@64,3,2,240,24 \
    s23=$N@64,2,3,240,24 > "$R/d256.txt" 2>&1
tail -9 "$R/d256.txt"
timeout 170 python3 gluon_fwd_versions.py --out "$R" --head-dim 64 --dtypes 16bit \
    --seqlens 1024 4096 16384 --versions $B s33=$N@128,3,3,232,40 s44=$N@128,4,4,232,40 \
    s55=$N@128,5,5,232,40 > "$R/d64.txt" 2>&1
tail -9 "$R/d64.txt"
