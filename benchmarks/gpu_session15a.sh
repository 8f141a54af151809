#!/usr/bin/env bash
# Session 15, call a: what session 14's last call (gpu_session14c.sh) never ran.
# 1. the FP8 GPU tests: FP8 d256 is on the Gluon forward (128-key tiles) by default since
#    session 14 and the default dispatch has not been tested on the GPU with it;
# 2. fp8_bench.py: fp8_bench.json / fp8_speed.png against the shipped bf16 forward (the
#    committed ones are session 9's, before both d256 forwards moved to Gluon);
# 3. FP8 d128 on the split-ring Gluon forward against the Triton FP8 kernel.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 230 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_fp8.py \
    tests/test_gpu_hopper.py -k "fp8" > "$R/gpu_tests_fp8.log" 2>&1
tail -3 "$R/gpu_tests_fp8.log"; grep -E "^(FAILED|E )" "$R/gpu_tests_fp8.log" | head -8
(cd benchmarks && timeout 170 python3 fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1)
tail -14 "$R/fp8_bench.txt"
N=../flashtile/kernels/forward_hopper.py
(cd benchmarks && timeout 110 python3 gluon_fwd_versions.py --out "$R" --head-dim 128 \
    --dtypes fp8 --versions g33=$N@128,3,3,240,24 > "$R/d128_fp8.txt" 2>&1)
tail -9 "$R/d128_fp8.txt"
tar -C "$R" -cf "$OUT/session15a.tar" .
