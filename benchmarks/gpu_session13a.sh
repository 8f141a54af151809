#!/usr/bin/env bash
# Session 13, call a: the Gluon forward with K and V in rings of their own (a K slot
# refills after its Q K^T, a step before V's). GPU tests of every Gluon forward row, then
# versions side by side: the session-12 module (one K/V ring, .variants copy of 30ed121)
# against the split rings at d256 (bf16, FP8) and d128 (bf16).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 170 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper.py \
    > "$R/test_fwd.txt" 2>&1
tail -1 "$R/test_fwd.txt"; grep -m5 "^FAILED" "$R/test_fwd.txt"
cd benchmarks
B=base=../.variants/forward_hopper_base.py
N=../flashtile/kernels/forward_hopper.py
timeout 140 python3 gluon_fwd_versions.py --out "$R" --head-dim 256 --dtypes 16bit \
    --seqlens 1024 4096 16384 --versions $B s22=$N@64,2,2,240,24 s32=$N@64,3,2,240,24 \
    > "$R/d256.txt" 2>&1
tail -9 "$R/d256.txt"
timeout 100 python3 gluon_fwd_versions.py --out "$R" --head-dim 256 --dtypes fp8 \
    --seqlens 4096 16384 --versions $B s33=$N@64,3,3,240,24 s44=$N@64,4,4,240,24 \
    > "$R/d256_fp8.txt" 2>&1
tail -7 "$R/d256_fp8.txt"
timeout 100 python3 gluon_fwd_versions.py --out "$R" --head-dim 128 --dtypes 16bit \
    --seqlens 2048 4096 16384 --versions $B s33=$N@128,3,3,240,24 > "$R/d128.txt" 2>&1
tail -9 "$R/d128.txt"
