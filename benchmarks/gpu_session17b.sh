#!/usr/bin/env bash
# Session 17, call b: the #4 suite (--quick) on the H100 (the suite so far ran on H200s
# only), its targets table, then the GPU tests session 17a did not run (test_gpu.py and
# the other -m gpu files besides test_gpu_fp8 / test_gpu_hopper).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader
timeout 300 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
    --out "$R/run1" --budget-s 260 > "$R/suite_log1.txt" 2>&1
cp "$R/run1/suite.json" "$R/suite.json" 2>/dev/null; cp "$R/run1/suite.txt" "$R/suite.txt" 2>/dev/null
rm -rf "$R/run1"
python3 benchmarks/targets.py "$R/suite.json" > "$R/targets.md" 2>&1; cat "$R/targets.md"
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider -m gpu tests \
    --ignore=tests/test_gpu_fp8.py --ignore=tests/test_gpu_hopper.py \
    > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^FAILED" "$R/gpu_tests.log" | head -8
