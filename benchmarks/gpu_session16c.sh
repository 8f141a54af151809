#!/usr/bin/env bash
# Session 16, call c: the Gluon forward's causal launch in L2 head groups, longest first
# across the group (forward_hopper._longest_first) vs one head at a time (l2=1, the order
# before) vs all heads in one group (l2=1e12: no L2 grouping). Prediction: +5-10% at 4k
# causal (kernel alone ran 84-85% of non-causal there in call b, 97% at 16k); non-causal
# rows are a control (same launch). (The GPU tests ran on the first try: 148 passed; the
# version specs had failed to parse, so the rerun skips them.)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
N=../flashtile/kernels/forward_hopper.py  # (ran at 9dfb6ac; its launch and l2= option were reverted after)
V="grouped=$N perhead=$N@l2=1 global=$N@l2=1e12 grouped2=$N"
cd benchmarks
for spec in "128 fp8" "256 fp8" "128 16bit"; do
  set -- $spec
  timeout 150 python3 gluon_fwd_versions.py --out "$R" --head-dim $1 --dtypes $2 \
      --seqlens 4096 16384 --versions $V > "$R/d$1_$2.txt" 2>&1
  tail -7 "$R/d$1_$2.txt"
done
cd ..
