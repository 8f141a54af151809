#!/usr/bin/env bash
# Session 9: the persistent Gluon forward (one CTA per SM looping over work tiles, O
# stored from registers, Q of the next tile loaded as soon as the last Q.K^T is done).
# GPU tests, then versions side by side: base = session 8's non-persistent kernel
# (.variants/forward_hopper_base.py), FP8 with more ring slots. Results -> $OUT/s9b.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper.py \
    > "$R/test_fwd.txt" 2>&1
tail -1 "$R/test_fwd.txt"; grep -m5 "^FAILED" "$R/test_fwd.txt"
B=.variants/forward_hopper_base.py; T=flashtile/kernels/forward_hopper.py
S="1024 2048 4096 8192 16384"
timeout 120 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit --seqlens $S \
    --versions base=$B persist=$T > "$R/versions_d128_bf16.txt" 2>&1
tail -13 "$R/versions_d128_bf16.txt"
timeout 160 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 --seqlens $S \
    --versions base=$B persist=$T p4=$T@128,4,240,24 p5=$T@128,5,240,24 \
    > "$R/versions_d128_fp8.txt" 2>&1
tail -13 "$R/versions_d128_fp8.txt"
for d in 64 256; do
  timeout 80 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit --head-dim $d \
      --seqlens 1024 2048 4096 16384 --versions base=$B persist=$T > "$R/versions_d${d}_bf16.txt" 2>&1
  tail -11 "$R/versions_d${d}_bf16.txt"
done
tar -C "$R" -cf "$OUT/s9b.tar" .
