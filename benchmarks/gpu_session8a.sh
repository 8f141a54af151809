#!/usr/bin/env bash
# Session 8, first call: the Gluon d256 backward (backward_hopper_d256.py). Its GPU tests
# first (d256 cases of test_gpu_hopper_backward.py, then the rest of that file: the
# shared helpers moved to hopper_common.py), first-call compile time, then the backward
# A/B at d256 against the Triton kernels, cuDNN and torch flash. Results -> $OUT/s8a.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -x -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "256" > "$R/test_bwd_d256.txt" 2>&1
tail -1 "$R/test_bwd_d256.txt"; grep -m5 "^FAILED\|Error" "$R/test_bwd_d256.txt"
if grep -q " passed" "$R/test_bwd_d256.txt" && ! grep -q "failed\|error" "$R/test_bwd_d256.txt"; then
  timeout 90 python3 - <<'PY' 2>&1 | tee "$R/compile_time.txt"
import time, torch, flashtile
for causal in (False, True):
    q, k, v = (torch.randn(1, 4096, 8, 256, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    out = flashtile.flash_attn_func(q, k, v, causal=causal)
    torch.cuda.synchronize(); t = time.perf_counter()
    out.backward(torch.randn_like(out)); torch.cuda.synchronize()
    print(f"d256 causal={causal}: first backward {time.perf_counter() - t:.1f} s")
PY
  timeout 170 python3 benchmarks/gluon_bwd_ab.py --out "$R" --head-dims 256 \
      --seqlens 2048 4096 8192 16384 2>&1 | tail -13
fi
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "not 256 and not grid" > "$R/test_bwd_rest.txt" 2>&1
tail -1 "$R/test_bwd_rest.txt"; grep -m3 "^FAILED" "$R/test_bwd_rest.txt"
tar -C "$R" -cf "$OUT/s8a.tar" .
