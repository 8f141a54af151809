#!/usr/bin/env bash
# Session 8, second call: the Gluon forward at head dim 256 (new CONFIGS rows, off in the
# dispatch until measured): its GPU tests, then bf16 / FP8 variants against the Triton
# forward at 4k and 16k, then the d256 backward tests' neighbours. Results -> $OUT/s8b.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper.py \
    -k "256 or fp8" > "$R/test_fwd_d256.txt" 2>&1
tail -1 "$R/test_fwd_d256.txt"; grep -m5 "^FAILED" "$R/test_fwd_d256.txt"
for S in 4096 16384; do
  timeout 100 python3 benchmarks/gluon_variants.py --out "$R" --head-dim 256 --seqlen $S \
      --dtypes 16bit --variants 64,2,240,24 64,2,232,40 2>&1 | tail -4
  timeout 100 python3 benchmarks/gluon_variants.py --out "$R" --head-dim 256 --seqlen $S \
      --dtypes fp8 --variants 64,2,240,24 64,3,240,24 128,2,240,24 2>&1 | tail -4
done
timeout 120 python3 benchmarks/gluon_ab.py --out "$R" --head-dims 256 --seqlens 1024 2048 4096 16384 \
    2>&1 | tail -12
tar -C "$R" -cf "$OUT/s8b.tar" .
