#!/usr/bin/env bash
# Session 16, call a: what the FP8 forward spends outside its attention kernel, and V's
# one-pass transpose kernel (kernels/layout.py) against torch's strided copy; then the
# FP8 GPU tests on the new transpose. Session 15c's ablation: even the Gluon skeleton with
# no softmax at all reached only 890 TFLOP/s at FP8 d128 4k vs 1117 at 16k (same tokens),
# while bf16 is flat in S: a per-call cost that shrinks with S, like V's copy, fits.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
(cd benchmarks && timeout 300 python3 fp8_overhead.py --out "$R" > "$R/fp8_overhead.txt" 2>&1)
tail -22 "$R/fp8_overhead.txt"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu_fp8.py tests/test_gpu_hopper.py \
    > "$R/gpu_tests_fp8.log" 2>&1
tail -3 "$R/gpu_tests_fp8.log"; grep -E "^(FAILED|E )" "$R/gpu_tests_fp8.log" | head -8
