#!/usr/bin/env bash
# Session 8: the quick benchmark suite (d 64/128/256, bf16, every method in one process)
# with the d64 / d256 backward changes in the default dispatch; charts are drawn locally
# from suite.json (benchmarks/plot.py). Results -> $OUT/bench.tar.
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 380 2>&1 | tail -48
tar -C "$R" -cf "$OUT/bench.tar" .
