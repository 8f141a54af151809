#!/usr/bin/env bash
# Session 4, second call: decode tests + split/config sweep after the chunked merge, and an
# A/B of the 64-bit row offsets (benchmarks/ab_old = tree with commit 9f58d89 reverted).
set -u
R=$OUT/r; mkdir -p "$R"
PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_decode.py \
    > "$R/gpu_tests_decode.log" 2>&1
tail -1 "$R/gpu_tests_decode.log"; grep -E "^FAILED" "$R/gpu_tests_decode.log" | head -5
PYTHONPATH=$PWD timeout 220 python3 benchmarks/decode_sweep.py --out "$R" --budget 170 2>&1 \
    | grep -v -E "^\[|Warning|return sdpa" | tail -40
for tree in new old new; do
  if [ $tree = old ]; then P=$PWD/benchmarks/ab_old; else P=$PWD; fi
  mkdir -p "$R/ab_$tree"
  PYTHONPATH=$P timeout 80 python3 benchmarks/bwd_variants.py --dims 256 --kernels dkdv \
      --seqlens 8192 --out "$R/ab_$tree" 2>&1 | grep "64x32 w4 s2 ptr" | sed "s/^/$tree /"
done
tar -C "$R" -cf "$OUT/s4b.tar" .
