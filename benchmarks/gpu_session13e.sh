#!/usr/bin/env bash
# Session 13, call e: the suite's third run (the last of the device budget).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 245 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R/run3" --budget-s 215 > "$R/suite_log3.txt" 2>&1
grep -c "" "$R/run3/suite.txt"
