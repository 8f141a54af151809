#!/usr/bin/env bash
# Session 7: LSE / Delta staged in shared memory by the loader warp (no global loads in the
# consumer loop, spills 196 -> 20 bytes). GPU tests, then in one process: this kernel, its
# no-reduce / no-dQ ablations, the previous commit (7d) and the dQ-one-tile-behind version
# (7e), both carried in .variants. d128 8k. Results -> $OUT/s7f.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -x tests/test_gpu_hopper_backward.py > "$R/test_bwd.txt" 2>&1
tail -3 "$R/test_bwd.txt"; grep -m3 -A30 "Error\|FAILED\|assert" "$R/test_bwd.txt" | head -60
timeout 250 python3 benchmarks/gluon_bwd_ablate.py --out "$R" --seqlen 8192 \
    --variants real no_reduce no_dq --modules v7d=.variants/backward_hopper_7d.py \
    v7e=.variants/backward_hopper_7e.py 2>&1 | tail -6
tar -C "$R" -cf "$OUT/s7f.tar" .
