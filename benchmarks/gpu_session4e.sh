#!/usr/bin/env bash
# Session 4, last call: GPU tests (descriptors built without re-validation, 2e10-flop TMA
# threshold), host time per call, the quick suite (charts for the README), the 1k re-time.
# Results -> $OUT/s4f.tar. (The previous version of this script also ran host_profile.py.)
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py tests/test_gpu_fp8.py \
    > "$R/gpu_tests_session4_last.log" 2>&1
tail -1 "$R/gpu_tests_session4_last.log"; grep -E "^FAILED" "$R/gpu_tests_session4_last.log" | head -8
timeout 60 python3 benchmarks/diagnose.py --host-only 2>&1 | tail -7 | tee "$R/host_us.txt"
timeout 40 python3 benchmarks/outlier_d128_causal_1k.py 2>&1 | tail -3
timeout 250 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 200 2>&1 | grep -E "^bf16 +(64|128|256) +1k|suite:"
tar -C "$R" -cf "$OUT/s4f.tar" .
