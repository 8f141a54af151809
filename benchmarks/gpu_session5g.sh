#!/usr/bin/env bash
# Session 5, last experiment: FP8 tile shapes / stages on TMA at 8k non-causal and 4k
# causal (the weakest case). Results -> $OUT/s5g.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/fp8_bench.py --variants --seqlens 8192 --out "$R" 2>&1 | tail -12
timeout 150 python3 benchmarks/fp8_bench.py --variants --seqlens 4096 --causal --out "$R" \
    2>&1 | tail -12
tar -C "$R" -cf "$OUT/s5g.tar" .
