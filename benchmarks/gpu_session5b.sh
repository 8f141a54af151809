#!/usr/bin/env bash
# Session 5, second call: FP8 forward after `tile_span` (V^T loads were 1-byte and not
# pipelined): config variants at 8k, the 16k-token table against bf16, then the GPU
# suites (the forward loop bounds changed for every dtype). Results -> $OUT/s5b.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/fp8_bench.py --variants --out "$R" > "$R/fp8_variants.txt" 2>&1
tail -16 "$R/fp8_variants.txt"
timeout 120 python3 benchmarks/fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1
tail -16 "$R/fp8_bench.txt"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fp8.py > "$R/gpu_tests_session5b.log" 2>&1
tail -1 "$R/gpu_tests_session5b.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests_session5b.log" | head -8
tar -C "$R" -cf "$OUT/s5b.tar" .
