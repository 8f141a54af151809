#!/usr/bin/env bash
# Session 6: d64 rows with the room O-in-Q staging freed (more ring slots), 8k and 4k,
# each variant's output checked against the Triton kernel's. Results -> $OUT/s6m.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R/8k" "$R/4k"
nvidia-smi --query-gpu=name --format=csv,noheader
for s in 8192 4096; do
  timeout 100 python3 benchmarks/gluon_variants.py --out "$R/$((s / 1024))k" --seqlen $s \
      --head-dim 64 --variants 128,3,232,40 128,4,232,40 64,4,232,40 2>&1 | tail -7
done
tar -C "$R" -cf "$OUT/s6m.tar" .
