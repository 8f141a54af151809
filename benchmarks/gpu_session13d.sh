#!/usr/bin/env bash
# Session 13, call d: the GPU tests call c's time limit cut (test_gpu.py stopped at 70%
# with no failure): the d256 cases, CUDA graphs, long / offset / masked-row cases through the
# default dispatch; then the suite's second run.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    -k "256 or graph or long or offsets or masked or repeat" > "$R/tests.txt" 2>&1
tail -1 "$R/tests.txt"; grep -m8 "^FAILED" "$R/tests.txt"
timeout 290 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R/run2" --budget-s 260 > "$R/suite_log2.txt" 2>&1
tail -44 "$R/suite_log2.txt" | head -40 | cut -c1-120 | sed -n 1,2p
grep -c "" "$R/run2/suite.txt"
