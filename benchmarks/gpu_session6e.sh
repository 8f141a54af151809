#!/usr/bin/env bash
# Session 6: the Gluon forward's full A/B table (bf16 + FP8, d64 / d128, 1k-16k, causal
# and not) with the final rows, and its first-call compile time on an empty Triton
# cache. Results -> $OUT/s6e.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
TRITON_CACHE_DIR=$(mktemp -d) timeout 120 python3 - <<'PY' 2>&1 | tail -3
import time, torch, flashtile
for d in (64, 128):
    q, k, v = (torch.randn(1, 4096, 16, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    t = time.perf_counter(); flashtile.flash_attn_func(q, k, v, causal=True); torch.cuda.synchronize()
    print(f"first call (compile) d{d} bf16 causal, Gluon forward: {time.perf_counter() - t:.1f} s")
PY
timeout 400 python3 benchmarks/gluon_ab.py --fp8 --out "$R" 2>&1 | tail -24
tar -C "$R" -cf "$OUT/s6e.tar" .
