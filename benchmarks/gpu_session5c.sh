#!/usr/bin/env bash
# Session 5, third call: FP8 forward with the row max on raw Q.K^T (one FMA per score) and
# V^T keys permuted so P needs no shuffles; TMA variants. Then the GPU
# suites (the forward softmax changed for every dtype). Results -> $OUT/s5c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 170 python3 benchmarks/fp8_bench.py --variants --out "$R" > "$R/fp8_variants.txt" 2>&1
tail -18 "$R/fp8_variants.txt"
timeout 130 python3 benchmarks/fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1
tail -16 "$R/fp8_bench.txt"
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fp8.py > "$R/gpu_tests_session5c.log" 2>&1
tail -1 "$R/gpu_tests_session5c.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests_session5c.log" | head -8
tar -C "$R" -cf "$OUT/s5c.tar" .
