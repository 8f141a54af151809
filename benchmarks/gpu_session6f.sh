#!/usr/bin/env bash
# Session 6, last: the GPU suite outside test_gpu.py's grid (which returns probs and so
# never reaches the Gluon kernel) with the Gluon forward on for 16-bit d128.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 500 python3 -m pytest -q -m gpu tests --deselect tests/test_gpu.py::test_grid \
    -p no:cacheprovider 2>&1 | tail -5
