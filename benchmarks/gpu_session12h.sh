#!/usr/bin/env bash
# Session 12, call h (#7): the FP8 d256 forward with pointer loads, as the bf16 d256 row
# uses (its TMA variant lost 20%), against the table row (TMA) at 4k causal and 8k.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
cd benchmarks
timeout 140 python3 fp8_bench.py --variants --head-dims 256 --seqlens 4096 --causal --out "$R" 2>&1 | tail -10
timeout 140 python3 fp8_bench.py --variants --head-dims 256 --seqlens 8192 --out "$R" 2>&1 | tail -10
# Call i (same machine, run inline): the same --variants --head-dims 256 --causal at 4096,
# 8192 and 16384 (fp8_variants_d256_*_causal_session12i.json).
