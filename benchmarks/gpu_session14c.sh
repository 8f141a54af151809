#!/usr/bin/env bash
# Session 14, call 2: FP8 d256 now on the Gluon forward (128-key tiles, 2 + 2 slots).
# 1. the FP8 GPU tests (the Gluon row is taken by the default dispatch from 2e10 flops);
# 2. fp8_bench.py: fp8_bench.json / fp8_speed.png against the shipped bf16 forward;
# 3. the suite's d128 rows alone (flashtile, cuDNN, forward only): does the suite's
#    harness reproduce its 533-564 TFLOP/s at 4k non-causal that grad_probe (596) and the
#    A/B scripts (601-616) do not?
# 4. FP8 d128 on the Gluon forward with the split rings (last measured in session 7, one
#    shared ring: +2% non-causal, -6% causal against the Triton FP8 kernel).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 -m pytest -q -x tests/test_gpu_fp8.py tests/test_gpu_hopper.py -k fp8 \
    > "$R/gpu_tests_fp8.log" 2>&1
tail -3 "$R/gpu_tests_fp8.log"
(cd benchmarks && timeout 160 python3 fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1)
tail -14 "$R/fp8_bench.txt"
for i in 1; do
  timeout 90 python3 -m flashtile bench --suite --methods flashtile sdpa-cudnn --headdim 128 \
      --seqlens 1024 4096 16384 --passes fwd --dtype bf16 --memory-seqlens 1024 --no-plot \
      --results-dir "$R/suite_probe$i" > "$R/suite_probe$i.txt" 2>&1
  grep -E "fwd|d128|flashtile|cudnn" "$R/suite_probe$i.txt" | tail -8
done
N=../flashtile/kernels/forward_hopper.py
(cd benchmarks && timeout 95 python3 gluon_fwd_versions.py --out "$R" --head-dim 128 \
    --dtypes fp8 --versions g33=$N@128,3,3,240,24 > "$R/d128_fp8.txt" 2>&1)
tail -8 "$R/d128_fp8.txt"
