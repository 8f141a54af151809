#!/usr/bin/env bash
# Session 10: the launch cache (flashtile/kernels/launcher.py). Host time per call with
# the cache on / off and the suite's 1k causal forwards (benchmarks/host_launch.py), then
# the GPU tests whose launches now go through it (Gluon forward, decode / merge, Triton
# forward + backward). Results -> $OUT/s10a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 benchmarks/host_launch.py --rounds 5 --out "$R" > "$R/host_launch.txt" 2>&1
tail -22 "$R/host_launch.txt"
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper.py \
    tests/test_decode.py -m gpu > "$R/test_fwd_decode.txt" 2>&1
tail -1 "$R/test_fwd_decode.txt"; grep -m5 "^FAILED" "$R/test_fwd_decode.txt"
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu.py \
    > "$R/test_gpu.txt" 2>&1
tail -1 "$R/test_gpu.txt"; grep -m5 "^FAILED" "$R/test_gpu.txt"
tar -C "$R" -cf "$OUT/s10a.tar" .
