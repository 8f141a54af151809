#!/usr/bin/env bash
# Session 12, call d: TMA descriptors encoded once per (address, shape, strides, box,
# layout) by BoundLaunch (launcher._Direct / _tensor_map) instead of by Triton's launcher
# on every launch: the GPU suites over every descriptor-passing launch (Gluon forward and
# backward, FP8, the launcher's binder checks), then host us per call with
# launcher.USE_TENSOR_MAPS on / off (tiny calls and 2k-token Gluon calls).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
for t in test_gpu_hopper test_gpu_hopper_backward test_gpu_fp8 test_launcher; do
    timeout 130 python3 -m pytest -q -n 16 -p no:cacheprovider tests/$t.py > "$R/$t.txt" 2>&1
    echo "$t: $(tail -1 "$R/$t.txt")"; grep -m5 "^FAILED" "$R/$t.txt"
done
cd benchmarks
timeout 110 python3 host_plans.py --switch tensor_maps --rounds 6 --host-only --out "$R" \
    > "$R/host_tensor_maps.txt" 2>&1
tail -18 "$R/host_tensor_maps.txt"
