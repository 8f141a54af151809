#!/usr/bin/env bash
# Session 6: after ping-pong was dropped and K / V share one "full" mbarrier (two
# partition barriers per key tile instead of four): Gluon GPU tests, then the bf16 A/B
# table. Results -> $OUT/s6i.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -x tests/test_gpu_hopper.py > "$R/test_gpu_hopper.txt" 2>&1
tail -2 "$R/test_gpu_hopper.txt"; grep FAILED "$R/test_gpu_hopper.txt" | head -3
timeout 250 python3 benchmarks/gluon_ab.py --out "$R" 2>&1 | tail -24
tar -C "$R" -cf "$OUT/s6i.tar" .
