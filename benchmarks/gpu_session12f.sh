#!/usr/bin/env bash
# Session 12, call f: the eager autograd Function no longer has torch materialise zero
# gradients for lse and probs before each backward: host us per forward + backward with
# that on / off (materialize_probe.py), and the GPU tests that take gradients through it.
# (Record: materialize_probe.py and the change it measured were removed after this call: no
# gain; NOTES.md session 12.)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
(cd benchmarks && timeout 100 python3 materialize_probe.py --rounds 6 --out "$R" \
    > "$R/materialize_probe.txt" 2>&1; tail -12 "$R/materialize_probe.txt")
timeout 200 python3 -m pytest -q -n 16 -p no:cacheprovider tests/test_gpu.py \
    -k "test_options or cuda_graph or repeat_tma or varlen or long" > "$R/test_gpu.txt" 2>&1
echo "test_gpu: $(grep -E 'passed|failed' "$R/test_gpu.txt" | tail -1)"; grep -m8 "^FAILED" "$R/test_gpu.txt"
