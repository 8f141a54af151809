#!/usr/bin/env bash
# Session 11, last call: the quick benchmark suite (d 64/128/256, bf16, every method in one
# process) with launch plans. Charts are drawn locally from the JSON (benchmarks/plot.py).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 290 > "$R/suite_log.txt" 2>&1
tail -44 "$R/suite_log.txt" | head -40
tar -C "$R" -cf "$OUT/s11d.tar" .
