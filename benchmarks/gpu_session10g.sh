#!/usr/bin/env bash
# Session 10, closing check: the Gluon kernels (descriptors with layouts) and the decode /
# merge kernels under the final launch-cache key (by argument types), which calls d-f
# timed but did not check. bf16 subsets to fit the session's last device minutes.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 70 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "bfloat16 or long_gqa or packed" > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
timeout 55 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper.py \
    -k "bfloat16 or gqa or packed or rows_without or lse or fp8" > "$R/test_fwd.txt" 2>&1
tail -1 "$R/test_fwd.txt"; grep -m5 "^FAILED" "$R/test_fwd.txt"
timeout 35 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_decode.py -m gpu \
    -k "not grid_limit" > "$R/test_decode.txt" 2>&1
tail -1 "$R/test_decode.txt"; grep -m5 "^FAILED" "$R/test_decode.txt"
tar -C "$R" -cf "$OUT/s10g.tar" .
