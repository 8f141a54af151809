#!/usr/bin/env bash
# Session 6: ping-pong between the Gluon forward's two consumer warpgroups (turn
# mbarriers), A/B against no ping-pong and the Triton forward at 8k, d128 and d64;
# then the Gluon GPU tests (ping-pong on). Results -> $OUT/s6g.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/gluon_variants.py --out "$R" --seqlen 8192 --head-dim 128 \
    --variants 64,3,232,40,0 64,3,232,40,1 128,2,240,24,1 2>&1 | tail -7
timeout 150 python3 benchmarks/gluon_variants.py --out "$R" --seqlen 8192 --head-dim 64 \
    --variants 128,3,232,40,0 128,3,232,40,1 64,3,232,40,1 2>&1 | tail -7
timeout 250 python3 -m pytest -q tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -3 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head
tar -C "$R" -cf "$OUT/s6g.tar" .
