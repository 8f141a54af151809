#!/usr/bin/env bash
# One device call: the quick suite (d 64/128/256), the d128 causal 1k re-time, GPT-2 training.
# Results -> $OUT/bench.tar. Usage: bash benchmarks/gpu_session_bench.sh
set -u
export PYTHONPATH=$PWD
R=$OUT/r; mkdir -p "$R"
timeout 300 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 240 2>&1 | tail -45
timeout 100 python3 benchmarks/fp8_bench.py --variants --out "$R" 2>&1 | tail -16
timeout 40 python3 benchmarks/outlier_d128_causal_1k.py 2>&1 | tail -6
timeout 150 python3 examples/train_gpt.py --size gpt2 --out "$R/train_gpt.json" 2>&1 | tail -4
tar -C "$R" -cf "$OUT/bench.tar" .
