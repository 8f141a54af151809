#!/usr/bin/env bash
# Session 8, fourth call: d256 backward with the first dQ chunk staged in the Q slot's
# columns (no wait between the two chunks' copies). GPU tests at d256, then A/B against
# the committed one-buffer version (.variants/d256_one_buffer.py, carried) and no_reduce
# at 8k and 2k. Results -> $OUT/s8d.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -x -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "256" > "$R/test_bwd_d256.txt" 2>&1
tail -1 "$R/test_bwd_d256.txt"; grep -m5 "^FAILED\|Error" "$R/test_bwd_d256.txt"
for S in 8192 2048; do
  mkdir -p "$R/$S"
  timeout 200 python3 benchmarks/gluon_bwd_ablate.py --out "$R/$S" --head-dim 256 --seqlen $S \
      --variants real no_reduce --modules one_buffer=.variants/d256_one_buffer.py 2>&1 | tail -4
done
tar -C "$R" -cf "$OUT/s8d.tar" .
