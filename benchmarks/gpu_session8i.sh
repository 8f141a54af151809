#!/usr/bin/env bash
# Session 8: after moving the two Gluon backward launchers' shared host code into
# hopper_common.launch_backward (and store_dkdv): the Gluon backward GPU tests. Results -> $OUT/s8i.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "not grid" > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m3 "^FAILED" "$R/test_bwd.txt"
tar -C "$R" -cf "$OUT/s8i.tar" .
