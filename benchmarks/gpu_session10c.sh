#!/usr/bin/env bash
# Session 10, third call: why a tiny forward + backward costs ~3x SDPA's host time
# (benchmarks/fwd_bwd_probe.py), then the full GPU test suite with the launch cache and
# both Gluon gates at TMA_MIN_FLOPS. Results -> $OUT/s10c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 90 python3 benchmarks/fwd_bwd_probe.py --out "$R" > "$R/fwd_bwd_probe.txt" 2>&1
head -12 "$R/fwd_bwd_probe.txt"; sed -n 13,40p "$R/fwd_bwd_probe.txt" | cut -c1-150
timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    tests/test_gpu_hopper.py > "$R/test_hopper.txt" 2>&1
tail -1 "$R/test_hopper.txt"; grep -m5 "^FAILED" "$R/test_hopper.txt"
timeout 330 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    > "$R/test_gpu.txt" 2>&1
tail -1 "$R/test_gpu.txt"; grep -m5 "^FAILED" "$R/test_gpu.txt"
tar -C "$R" -cf "$OUT/s10c.tar" .
