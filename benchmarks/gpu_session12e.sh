#!/usr/bin/env bash
# Session 12, call e: the rest of the GPU suites after call d's tensor-map change: all of
# test_gpu.py (with the new repeat-launch test, the CUDA-graph replay of the direct
# launch; the decode kernels pass no descriptors), then the host probe (cProfile of a tiny
# forward + backward).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    -k "repeat_tma or cuda_graph" > "$R/test_direct.txt" 2>&1
echo "direct: $(tail -1 "$R/test_direct.txt")"; grep -m5 -A20 "^____" "$R/test_direct.txt" | head -40
timeout 320 python3 -m pytest -q -n 16 -p no:cacheprovider tests/test_gpu.py \
    > "$R/test_gpu.txt" 2>&1
echo "test_gpu: $(grep -E 'passed|failed' "$R/test_gpu.txt" | tail -1)"; grep -m8 "^FAILED" "$R/test_gpu.txt"
cd benchmarks && timeout 80 python3 fwd_bwd_probe.py --out "$R" > "$R/fwd_bwd_probe.txt" 2>&1
tail -32 "$R/fwd_bwd_probe.txt"
