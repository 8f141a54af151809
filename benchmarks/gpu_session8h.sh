#!/usr/bin/env bash
# Session 8, last call: after the d256 dispatch threshold change (MIN_FLOPS_D256), the
# d256 and dispatch tests of the Gluon backward, and the 1k d256 backward through the
# default dispatch (no forcing). Results -> $OUT/s8h.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "256 or other" > "$R/test_bwd.txt" 2>&1
tail -1 "$R/test_bwd.txt"; grep -m3 "^FAILED" "$R/test_bwd.txt"
timeout 60 python3 - <<'PY' 2>&1 | tee "$R/dispatch_1k.txt"
import torch, flashtile
from flashtile.kernels import backward_hopper
calls = []
orig = backward_hopper.attention_backward
backward_hopper.attention_backward = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
q, k, v = (torch.randn(16, 1024, 8, 256, device="cuda", dtype=torch.bfloat16,
                       requires_grad=True) for _ in range(3))
out = flashtile.flash_attn_func(q, k, v, causal=True)
out.backward(torch.randn_like(out))
print("d256 16x1k causal backward took the Gluon kernel:", len(calls) == 1)
PY
tar -C "$R" -cf "$OUT/s8h.tar" .
