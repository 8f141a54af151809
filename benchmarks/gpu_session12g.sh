#!/usr/bin/env bash
# Session 12, call g: the direct TMA launch after its Triton-version gate (_DIRECT_OK):
# the image's Triton version, the gate's value, and the repeat-launch GPU tests.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import triton; from flashtile.kernels import launcher; print(triton.__version__, launcher._DIRECT_OK)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "repeat_tma or cuda_graph" 2>&1 | tail -2
