#!/usr/bin/env bash
# Session 13, call c: the GPU tests with the d256 16-bit forward on the split-ring Gluon
# kernel (row 64,2,2,240,24, now in ENABLED), then the first of the suite's runs.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 260 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_hopper.py > "$R/tests.txt" 2>&1
tail -1 "$R/tests.txt"; grep -m8 "^FAILED" "$R/tests.txt"
timeout 300 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R/run1" --budget-s 270 > "$R/suite_log1.txt" 2>&1
tail -44 "$R/suite_log1.txt" | head -40
