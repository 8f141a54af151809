#!/usr/bin/env bash
# Session 11, first call: what session 10 wrote after its device budget ran out (the CUDA-graph
# replay test, the final launch-cache key, the merged descriptor builder), then the full GPU
# suites that cover every kernel the launch cache wraps.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    -k cuda_graph_replay > "$R/test_graph.txt" 2>&1
tail -1 "$R/test_graph.txt"; grep -m5 -A30 "^____" "$R/test_graph.txt" | head -60
timeout 270 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py tests/test_launcher.py \
    > "$R/test_gpu.txt" 2>&1
tail -1 "$R/test_gpu.txt"; grep -m8 "^FAILED" "$R/test_gpu.txt"
timeout 100 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_decode.py -m gpu \
    > "$R/test_decode.txt" 2>&1
tail -1 "$R/test_decode.txt"; grep -m5 "^FAILED" "$R/test_decode.txt"
timeout 100 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_fp8.py \
    > "$R/test_fp8.txt" 2>&1
tail -1 "$R/test_fp8.txt"; grep -m5 "^FAILED" "$R/test_fp8.txt"
tar -C "$R" -cf "$OUT/s11a.tar" .
