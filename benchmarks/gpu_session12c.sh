#!/usr/bin/env bash
# Session 12, call c: call b's test_gpu.py run hit its time limit at ~85% on a slow host
# (no failure up to there): the whole file again with more time.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 480 python3 -m pytest -q -n 16 -p no:cacheprovider --durations=15 tests/test_gpu.py \
    > "$R/test_gpu.txt" 2>&1
grep -m1 -E "passed|failed" "$R/test_gpu.txt" | tail -1; grep -m8 "^FAILED" "$R/test_gpu.txt"
grep -A17 "slowest" "$R/test_gpu.txt" | tail -16
