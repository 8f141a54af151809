#!/usr/bin/env bash
# Session 6: Gluon forward launch variants at d128 (consumer registers, key tile,
# ring depth) against the Triton forward; then its GPU tests, verbose, to a file.
# Results -> $OUT/s6c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/gluon_variants.py --out "$R" --seqlen 8192 \
    --variants 128,2,232,40 128,2,240,24 64,3,232,40 64,4,240,24 2>&1 | tail -8
timeout 280 python3 -m pytest -v tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -4 "$R/test_gpu_hopper.txt"; grep -c PASSED "$R/test_gpu_hopper.txt"
grep FAILED "$R/test_gpu_hopper.txt" | head
tar -C "$R" -cf "$OUT/s6c.tar" .
