#!/usr/bin/env bash
# Session 9: FP8 d128 forward with part of the exp2s on the FMA pipe (a degree-2
# polynomial, FA4's trick) -- ncu (9c / 9d) had the MUFU (XU) pipe and the tensor pipe
# each ~45% busy, in turn rather than together, and the MUFU queue throttling. Variants:
# every 2nd / 4th key column emulated (.variants/forward_hopper_emu{2,4}.py), base twice.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
B=flashtile/kernels/forward_hopper.py
timeout 200 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 \
    --seqlens 4096 8192 16384 --versions base1=$B emu4=.variants/forward_hopper_emu4.py \
    emu2=.variants/forward_hopper_emu2.py base2=$B > "$R/versions_emu.txt" 2>&1
tail -9 "$R/versions_emu.txt"
python3 - "$R/gluon_fwd_versions_d128_fp8.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["causal"], r["seqlen"], {k: f"{v:.3g}" for k, v in r["max_abs_diff_vs_triton"].items()})
PY
tar -C "$R" -cf "$OUT/s9f.tar" .
