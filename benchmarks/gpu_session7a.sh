#!/usr/bin/env bash
# Session 7, first call: the session-6 refactor and the Gluon FP8 shuffle-free P were never
# run on the GPU. Gluon GPU tests first, then d128 8k variants (bf16 + FP8 rows against the
# Triton kernel), then the d64 rows with more ring slots (was gpu_session6m.sh).
# Results -> $OUT/s7a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R/d128" "$R/d64"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 -m pytest -q tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -2 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head -5
timeout 90 python3 benchmarks/gluon_variants.py --out "$R/d128" --seqlen 8192 \
    --head-dim 128 --variants 128,3,240,24 64,3,232,40 2>&1 | tail -7
timeout 100 python3 benchmarks/gluon_variants.py --out "$R/d64" --seqlen 8192 \
    --head-dim 64 --variants 128,3,232,40 128,4,232,40 64,4,232,40 2>&1 | tail -7
tar -C "$R" -cf "$OUT/s7a.tar" .
