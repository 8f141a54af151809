#!/usr/bin/env bash
# Session 7: where the Gluon backward's time goes (gluon_bwd_ablate.py: real / no atomic
# adds / no dQ at all / 3 ring slots), d128 8k. Results -> $OUT/s7c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 benchmarks/gluon_bwd_ablate.py --out "$R" --seqlen 8192 2>&1 | tail -6
tar -C "$R" -cf "$OUT/s7c.tar" .
