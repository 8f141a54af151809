#!/usr/bin/env bash
# Session 9: three consumer warpgroups (192 query rows per CTA, 160 registers each; as
# FlashAttention-3 does at d64) in the Gluon forward -- more warps per scheduler to
# hide the softmax's latency (ncu 9c: 57% of cycles with no eligible warp). FP8 d128,
# bf16 d128 and d64, against the 2-warpgroup rows and the Triton kernel.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
T=flashtile/kernels/forward_hopper.py
timeout 170 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 \
    --seqlens 4096 8192 16384 --versions base=$T w3n64s4=$T@64,4,160,24,3 \
    w3n64s6=$T@64,6,160,24,3 w3n128s3=$T@128,3,160,24,3 > "$R/v_fp8.txt" 2>&1
tail -9 "$R/v_fp8.txt"
timeout 140 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit \
    --seqlens 2048 4096 16384 --versions base=$T w3n64s4=$T@64,4,160,24,3 \
    w3n64s5=$T@64,5,160,24,3 > "$R/v_d128.txt" 2>&1
tail -9 "$R/v_d128.txt"
timeout 160 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit --head-dim 64 \
    --seqlens 1024 2048 4096 16384 --versions base=$T w3n64s4=$T@64,4,160,24,3 \
    w3n64s6=$T@64,6,160,24,3 > "$R/v_d64.txt" 2>&1
tail -11 "$R/v_d64.txt"
for f in "$R"/gluon_fwd_versions_*.json; do python3 - "$f" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    bad = {k: v for k, v in r["max_abs_diff_vs_triton"].items() if v > 0.1}
    if bad: print("LARGE DIFF", sys.argv[1], r["causal"], r["seqlen"], bad)
PY
done
tar -C "$R" -cf "$OUT/s9h.tar" .
