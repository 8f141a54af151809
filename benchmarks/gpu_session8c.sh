#!/usr/bin/env bash
# Session 8, third call: where the d256 Gluon backward's time goes and two wgmma orders
# (gluon_bwd_ablate.py --head-dim 256: real, no_reduce, dq_first, dv_dq_dk) at 8k and 2k.
# Results -> $OUT/s8c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
for S in 8192 2048; do
  mkdir -p "$R/$S"
  timeout 200 python3 benchmarks/gluon_bwd_ablate.py --out "$R/$S" --head-dim 256 --seqlen $S \
      --variants real no_reduce dq_first dv_dq_dk 2>&1 | tail -4
done
tar -C "$R" -cf "$OUT/s8c.tar" .
