#!/usr/bin/env bash
# Session 16, call d: fp8_bench on the tree with V's transpose kernel (README's FP8 table
# and chart), fp8_overhead again (the transpose now through a launch plan: host us), then
# the whole GPU suite (-m gpu) once on this session's tree.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 150 python3 benchmarks/fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1
tail -14 "$R/fp8_bench.txt"
(cd benchmarks && timeout 200 python3 fp8_overhead.py --out "$R" > "$R/fp8_overhead.txt" 2>&1)
tail -11 "$R/fp8_overhead.txt"
timeout 300 python3 -m pytest -q -n 14 -p no:cacheprovider -m gpu tests > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
