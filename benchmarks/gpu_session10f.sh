#!/usr/bin/env bash
# Session 10, last call: GPU tests that run the new short-causal d64 row (head dim 59
# option mixes, varlen), then the quick benchmark suite (d 64/128/256, bf16, every method
# in one process) with the launch cache, the Gluon gates at 2e10 and the short-causal row.
# Charts are drawn locally from the JSON (benchmarks/plot.py). Results -> $OUT/s10f.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    -k "test_options or test_varlen" > "$R/test_gpu_subset.txt" 2>&1
tail -1 "$R/test_gpu_subset.txt"; grep -m5 "^FAILED" "$R/test_gpu_subset.txt"
timeout 300 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 265 > "$R/suite_log.txt" 2>&1
tail -44 "$R/suite_log.txt" | head -40
tar -C "$R" -cf "$OUT/s10f.tar" .
