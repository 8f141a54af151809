#!/usr/bin/env bash
# Session 10, fifth call: the 1k forwards that miss 1.5x (d64) / 1.3x (d256) torch flash are
# kernel-bound now (the launch cache took the host out): smaller query blocks against the
# table's rows at 1k / 2k / 16k (benchmarks/fwd_variants.py). Results -> $OUT/s10e.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
V="64,128,64,4,3,1;64,64,64,4,3,1;64,64,128,4,3,1;64,128,128,8,3,1"
V="$V;256,128,64,8,2,0;256,64,64,4,2,0;256,64,64,4,2,1;256,128,32,8,2,0"
timeout 200 python3 benchmarks/fwd_variants.py --out "$R" --seqlens 1024,2048,16384 \
    --head-dims 64 256 --variants "$V" > "$R/fwd_variants.txt" 2>&1
tail -52 "$R/fwd_variants.txt" | grep -v "^$"
tar -C "$R" -cf "$OUT/s10e.tar" .
