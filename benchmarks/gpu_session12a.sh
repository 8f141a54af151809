#!/usr/bin/env bash
# Session 12, call a: the Gluon backward's dQ buffer zeroed by the preprocess launch
# (backward.ZERO_DQ_IN_PREPROCESS) and, at d128, warpgroups taking turns at dQ
# (backward_hopper.DQ_TURNS[128]): the Gluon backward's GPU tests on the new default,
# then A/B rows "stages,consumer_regs,loader_regs,turns,zero_in_preprocess" in one process.
# (Record: the 4th / 5th --config fields, DQ_TURNS and ZERO_DQ_IN_PREPROCESS were experiment
# switches of this call, removed after it; NOTES.md session 12.)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
cd benchmarks
mkdir -p "$R/d128" "$R/d64" "$R/d256"
timeout 200 python3 gluon_bwd_ab.py --out "$R/d128" --head-dims 128 \
    --seqlens 1024 2048 4096 16384 --config 2,240,24,0,0 2,240,24,0,1 2,240,24,1,1 \
    > "$R/d128.txt" 2>&1
tail -14 "$R/d128.txt"
timeout 110 python3 gluon_bwd_ab.py --out "$R/d64" --head-dims 64 \
    --seqlens 1024 4096 --config 2,240,24,1,0 2,240,24,1,1 > "$R/d64.txt" 2>&1
tail -8 "$R/d64.txt"
timeout 110 python3 gluon_bwd_ab.py --out "$R/d256" --head-dims 256 \
    --seqlens 1024 4096 --config 0,0,0,0,0 0,0,0,0,1 > "$R/d256.txt" 2>&1
tail -8 "$R/d256.txt"
