#!/usr/bin/env bash
# Session 17, call c (the session's clock nearly out): only the GPU tests call a did not
# run (test_gpu.py and the other -m gpu files besides test_gpu_fp8 / test_gpu_hopper).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 270 python3 -m pytest -q -n 14 -p no:cacheprovider -m gpu tests \
    --ignore=tests/test_gpu_fp8.py --ignore=tests/test_gpu_hopper.py > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
