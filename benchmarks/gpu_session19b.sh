#!/usr/bin/env bash
# Session 19, call b: the two bigmem tests that ran out of memory next to 14 xdist workers
# in call a, now alone (no -n).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 -m pytest -q -p no:cacheprovider -m "gpu and bigmem" tests > "$R/gpu_tests_bigmem.log" 2>&1
tail -2 "$R/gpu_tests_bigmem.log"; grep -E "^FAILED" "$R/gpu_tests_bigmem.log" | head -8
