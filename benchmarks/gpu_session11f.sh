#!/usr/bin/env bash
# Session 11, last call: the device guard (launcher.on_tensors_device) on one GPU: the
# CUDA-graph, option-mix, compile and decode tests (the two-GPU test skips here).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    -k "cuda_graph or another or compile or test_options and bfloat16" 2>&1 | tail -2
timeout 60 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_decode.py -m gpu \
    -k "long" 2>&1 | tail -1
