#!/usr/bin/env bash
# Session 6: O staged in Q's shared memory (16-bit), which makes room for 128-key tiles
# with three ring slots at d128: launch variants at 8k and 2k against the Triton kernel.
# Results -> $OUT/s6j.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R/8k" "$R/2k"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 benchmarks/gluon_variants.py --out "$R/8k" --seqlen 8192 --head-dim 128 \
    --variants 64,3,232,40 128,3,240,24 128,2,240,24 64,4,232,40 2>&1 | tail -7
timeout 150 python3 benchmarks/gluon_variants.py --out "$R/2k" --seqlen 2048 --head-dim 128 \
    --variants 64,3,232,40 128,3,240,24 2>&1 | tail -7
tar -C "$R" -cf "$OUT/s6j.tar" .
