"""Two diagnostics in one device call (see NOTES.md, session 3):

1. Which matrix instructions the FP8 forward kernel compiled to: counts of wgmma (by input
   type) and mma.sync in the PTX of every kernel compiled in this process.
2. Host time per call for tiny inputs (kernel time ~ negligible): a prefill call (grad
   recording on/off) and a decode step, each next to torch SDPA.

    TRITON_CACHE_DIR=$(mktemp -d) python3 benchmarks/diagnose.py [--host-only]
"""

from __future__ import annotations

import glob
import os
import re
import time

import torch

import flashtile
from flashtile.kernels import config


def instruction_counts():
    q, k, v = (torch.randn(2, 2048, 16, 128, device="cuda").to(torch.float8_e4m3fn)
               for _ in range(3))
    flashtile.flash_attn_func(q, k, v)
    torch.cuda.synchronize()
    for path in sorted(glob.glob(os.path.join(os.environ["TRITON_CACHE_DIR"], "*", "*.ptx"))):
        ptx = open(path).read()
        kinds = re.findall(
            r"wgmma\.mma_async(?:\.sp)?\.sync\.aligned\.m64n(\d+)k\d+\.f32\.(\w+)\.(\w+)", ptx)
        mma = len(re.findall(r"mma\.sync\.aligned", ptx))
        cvt = len(re.findall(r"cvt\.rn\.satfinite\.e4m3x2", ptx))
        name = os.path.basename(path)
        summary = {}
        for n, a, b in kinds:
            summary[f"n{n} {a}x{b}"] = summary.get(f"n{n} {a}x{b}", 0) + 1
        print(f"{name}: wgmma {summary or 0}, mma.sync {mma}, cvt->e4m3x2 {cvt}")


def host_us(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def host_overhead():
    """Wall time per call of tiny inputs: prefill (flash_attn_func, no descriptors at
    this size) and one decode step (flash_attn_with_kvcache, B = 1, 1k cache, split)."""
    q, k, v = (torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    ours = lambda: flashtile.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    qd = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    kc, vc = (torch.randn(1, 1024, 8, 128, device="cuda", dtype=torch.bfloat16)
              for _ in range(2))
    lens = torch.full((1,), 1024, dtype=torch.int32, device="cuda")
    sdpa_dec = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
        qd.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2), enable_gqa=True)
    ours_dec = lambda: flashtile.flash_attn_with_kvcache(  # noqa: E731
        qd, kc, vc, cache_seqlens=lens)
    rows = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            rows.append((f"torch SDPA, grad={grad}", host_us(sdpa)))
            rows.append((f"flashtile, grad={grad}", host_us(ours)))
    with torch.no_grad():
        rows.append(("torch SDPA decode step", host_us(sdpa_dec)))
        rows.append(("flashtile decode step (split + merge)", host_us(ours_dec)))
    print(f"\n{torch.cuda.get_device_name()}: wall us per call; prefill (1, 128, 2, 64) "
          f"bf16 causal; decode (1, 1, 32, 128) against a 1k cache of 8 KV heads")
    for name, us in rows:
        print(f"  {name:40s} {us:7.1f}")


if __name__ == "__main__":
    import sys
    if "--host-only" not in sys.argv:
        instruction_counts()
    host_overhead()
