#!/usr/bin/env bash
# Session 11, call c: GPU tests over what call b did not run (decode plans, the backward's
# reordered dispatch, Triton backward paths), host us with plans on / off (decode now
# planned too), and the 1k causal forward with / without grad (grad_probe.py).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 80 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_decode.py -m gpu \
    > "$R/test_decode.txt" 2>&1
tail -1 "$R/test_decode.txt"; grep -m5 "^FAILED" "$R/test_decode.txt"
timeout 120 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu.py \
    -k "test_options or deterministic or cuda_graph or fully_masked or float32 or beyond" \
    > "$R/test_gpu_subset.txt" 2>&1
tail -1 "$R/test_gpu_subset.txt"; grep -m5 "^FAILED" "$R/test_gpu_subset.txt"
timeout 70 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "bfloat16 or empty or zero or long" > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
cd benchmarks
timeout 60 python3 host_plans.py --rounds 4 --host-only --out "$R" > "$R/host_plans.txt" 2>&1
tail -14 "$R/host_plans.txt"
timeout 120 python3 grad_probe.py --rounds 2 --out "$R" > "$R/grad_probe.txt" 2>&1
tail -14 "$R/grad_probe.txt"
tar -C "$R" -cf "$OUT/s11c.tar" .
