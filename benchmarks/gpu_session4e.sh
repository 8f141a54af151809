#!/usr/bin/env bash
# Session 4, fifth call: host-time profile of tiny calls, then the quick suite (charts for
# the README) and the d128 causal 1k re-time.
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
timeout 60 python3 benchmarks/host_profile.py --out "$R" 2>&1 | tail -48
timeout 330 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 270 2>&1 | tail -40
timeout 40 python3 benchmarks/outlier_d128_causal_1k.py 2>&1 | tail -4
tar -C "$R" -cf "$OUT/s4e.tar" .
