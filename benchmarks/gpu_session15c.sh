#!/usr/bin/env bash
# Session 15, call c: where the Gluon forward's softmax time goes (#4 d64, #7 FP8 d128).
# Call b: softmax turns lost 8-20%, the early rescale 1-9%, and dropping P's exp2 gained
# only 13-23%. Each diagnostic copy drops one piece of the softmax (outputs WRONG on
# purpose): noexp (P's exp2), nomax (row max), nosum (row sum), norescale (O's rescale),
# all (the four: tensor cores, loads, barriers and P's conversion left); base2 = spread.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
N=../flashtile/kernels/forward_hopper.py
V="base=$N noexp=$N@noexp nomax=$N@nomax nosum=$N@nosum norescale=$N@norescale"
V="$V all=$N@noexp@nomax@nosum@norescale base2=$N"
cd benchmarks
for spec in "128 fp8" "64 16bit" "128 16bit"; do
  set -- $spec
  timeout 150 python3 gluon_fwd_versions.py --out "$R" --head-dim $1 --dtypes $2 \
      --seqlens 4096 16384 --versions $V > "$R/d$1_$2.txt" 2>&1
  tail -7 "$R/d$1_$2.txt"
done
