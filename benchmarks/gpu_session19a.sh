#!/usr/bin/env bash
# Session 19, call a: the -m gpu tests session 19's suite call (gpu_session17b.sh) cut at
# 48% (its 240 s timeout), all files except test_gpu_fp8 / test_gpu_hopper (run in 17a).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 540 python3 -m pytest -q -n 14 -p no:cacheprovider -m gpu tests \
    --ignore=tests/test_gpu_fp8.py --ignore=tests/test_gpu_hopper.py > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
