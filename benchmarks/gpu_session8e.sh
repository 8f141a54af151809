#!/usr/bin/env bash
# Session 8, fifth call: d64 backward with the warpgroups taking turns at dQ over all 128
# keys (half the fp32 reduce-add bytes). GPU tests of the whole Gluon backward file
# (reduce_dq moved to hopper_common.py), then A/B against the committed version
# (.variants/bwd_hopper_d64_own_keys.py, carried) at 2k, 4k and 16k. Results -> $OUT/s8e.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "not grid" > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m5 "^FAILED" "$R/test_bwd.txt"
for S in 2048 4096 16384; do
  mkdir -p "$R/$S"
  timeout 100 python3 benchmarks/gluon_bwd_ablate.py --out "$R/$S" --head-dim 64 --seqlen $S \
      --variants real --modules own_keys=.variants/bwd_hopper_d64_own_keys.py 2>&1 | tail -4
done
tar -C "$R" -cf "$OUT/s8e.tar" .
