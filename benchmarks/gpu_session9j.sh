#!/usr/bin/env bash
# Session 9: ping-pong under the clock timeline (gluon_fwd_trace.py): bdd6243's turns
# without the tree reductions (.variants/forward_hopper_pp.py), and with FA3's detail that
# warpgroup 1 skips the K/V "full" wait (warpgroup 0 passed it before handing over the
# turn; .variants/forward_hopper_pp_skip.py). Traces, then timings against the shipped
# kernel. Results -> $OUT/s9j.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
for v in pp pp_skip; do
  for a in --fp8 ""; do
    timeout 60 python3 benchmarks/gluon_fwd_trace.py --out "$R" $a --pp \
        --module .variants/forward_hopper_$v.py --tag "_$v" 2>&1 | tail -1
  done
done
T=flashtile/kernels/forward_hopper.py
timeout 200 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 16bit \
    --seqlens 4096 16384 --versions base=$T pp=.variants/forward_hopper_pp.py@pp \
    pp_skip=.variants/forward_hopper_pp_skip.py@pp base2=$T > "$R/v_pp.txt" 2>&1
tail -11 "$R/v_pp.txt"
tar -C "$R" -cf "$OUT/s9j.tar" .
