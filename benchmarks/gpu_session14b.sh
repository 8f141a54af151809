#!/usr/bin/env bash
# Prepared in session 13 (not run yet): the suite reads the d128 4k non-causal forward
# at 533-564 TFLOP/s in every run (sessions 11 and 13) while the A/B scripts read 601-616
# for the same Gluon kernel under no_grad (16k agrees: 621-636). grad_probe.py times that
# row with grad and under no_grad, alternating, next to SDPA's flash and cuDNN backends.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
cd benchmarks
timeout 200 python3 grad_probe.py --rounds 4 --seqlen 4096 --non-causal --head-dims 128 \
    --out "$R" 2>&1 | tail -8
