#!/usr/bin/env bash
# Session 9: decode grid past 65535 (B * Hk); the Gluon forward GPU tests after the tree
# row reductions and with ping-pong rows; FP8 / bf16 d128 forward versions side by side
# (base = session 8's forward_hopper.py, carried in .variants/). Results -> $OUT/s9a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_decode.py -k grid_limit \
    > "$R/test_decode_grid.txt" 2>&1
tail -1 "$R/test_decode_grid.txt"; grep -m3 "^FAILED\|Error" "$R/test_decode_grid.txt"
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper.py \
    > "$R/test_fwd.txt" 2>&1
tail -1 "$R/test_fwd.txt"; grep -m5 "^FAILED" "$R/test_fwd.txt"
B=.variants/forward_hopper_base.py; T=flashtile/kernels/forward_hopper.py
timeout 170 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 \
    --versions base=$B tree=$T tree_pp=$T@pp n256=$T@256,2,240,24 n256_pp=$T@256,2,240,24@pp \
    > "$R/versions_fp8.txt" 2>&1
tail -16 "$R/versions_fp8.txt"
timeout 100 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit \
    --versions base=$B tree=$T tree_pp=$T@pp > "$R/versions_bf16.txt" 2>&1
tail -10 "$R/versions_bf16.txt"
tar -C "$R" -cf "$OUT/s9a.tar" .
