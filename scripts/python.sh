#!/usr/bin/env bash
# Prints the Python interpreter to run flashtile with, setting one up if needed.
#  - On a GPU machine whose python3 already has PyTorch with CUDA, Triton and
#    pytest (e.g. an image without internet access), that python3 is used as is.
#  - Anywhere else a virtual environment .venv is created once and filled from
#    requirements-test.txt: CPU PyTorch, Triton 3.6.0, and numpy 2.2.x, because
#    Triton 3.6's interpreter breaks with numpy >= 2.3.
# Install output goes to stderr; stdout carries only the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c "import torch, triton, pytest, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo python3
    exit 0
fi
if ! .venv/bin/python -c "import torch, triton, numpy, pytest, xdist" 2>/dev/null; then
    echo "flashtile: creating .venv and installing requirements-test.txt (one time)" >&2
    python3 -m venv .venv >&2
    .venv/bin/python -m pip install -q --upgrade pip >&2 || true
    .venv/bin/python -m pip install -q -r requirements-test.txt >&2
fi
echo .venv/bin/python
