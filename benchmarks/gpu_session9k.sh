#!/usr/bin/env bash
# Session 9: FP8 d128 Gluon forward with key tiles of 160 / 192 keys held as two parts
# (128 + 32 / 128 + 64; Gluon tensors are powers of two, FA3 uses 224-key FP8 tiles): the
# per-tile phases the timeline showed (issue, S wait, rest ~800 of 2289 cycles) spread
# over more keys. Outputs compared with the Triton kernel's.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
T=flashtile/kernels/forward_hopper.py
timeout 250 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 \
    --seqlens 4096 8192 16384 --versions base=$T n160s3=$T@160,3,240,24 \
    n160s4=$T@160,4,240,24 n192s3=$T@192,3,240,24 base2=$T > "$R/v_split.txt" 2>&1
tail -9 "$R/v_split.txt"
python3 - "$R/gluon_fwd_versions_d128_fp8.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["causal"], r["seqlen"], {k: f"{v:.3g}" for k, v in r["max_abs_diff_vs_triton"].items()})
PY
tar -C "$R" -cf "$OUT/s9k.tar" .
