#!/usr/bin/env bash
# Session 7: the quick benchmark suite (d 64/128/256, bf16, every method in one process)
# with the Gluon forward and backward in the default dispatch; charts are drawn locally
# from suite.json (benchmarks/plot.py). Results -> $OUT/bench.tar.
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
timeout 330 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 290 2>&1 | tail -48
tar -C "$R" -cf "$OUT/bench.tar" .
