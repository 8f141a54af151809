#!/usr/bin/env bash
# Session 9, last device call: decode GPU tests (grid axis change), the quick benchmark
# suite (d 64/128/256, bf16, every method in one process; suite last re-run before the
# d256 backward size threshold), and FP8 against bf16 (issue #7). Charts are drawn
# locally from the JSON (benchmarks/plot.py). Results -> $OUT/bench.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_decode.py -m gpu \
    > "$R/test_decode.txt" 2>&1
tail -1 "$R/test_decode.txt"; grep -m3 "^FAILED" "$R/test_decode.txt"
timeout 300 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R" --budget-s 270 > "$R/suite_log.txt" 2>&1
tail -44 "$R/suite_log.txt" | head -40
timeout 120 python3 benchmarks/fp8_bench.py --out "$R" > "$R/fp8_log.txt" 2>&1
tail -16 "$R/fp8_log.txt"
tar -C "$R" -cf "$OUT/bench.tar" .
