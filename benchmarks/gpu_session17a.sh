#!/usr/bin/env bash
# Session 17, call a: FA4's lazy rescale in the Triton forward (rescale_ab.py: FP8 d128,
# bf16 d64), then the FP8 + Hopper GPU tests (the first GPU run of session 16's
# batch_head_grid change in layout.transposed_v) and the lazy-rescale tests on the GPU.
set -u
# (rescale_ab.py and the RESCALE_TAU switch were reverted after this call: cb9e392 has them.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 260 python3 benchmarks/rescale_ab.py --out "$R" > "$R/rescale_ab.txt" 2>&1
tail -12 "$R/rescale_ab.txt"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu_fp8.py \
  tests/test_gpu_hopper.py "tests/test_triton_interpreter.py::test_lazy_rescale" \
  > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
