"""Where the host time of a tiny call goes, on the GPU machine: cProfile of 500 calls of a
decode step (flash_attn_with_kvcache, B = 1, 1k cache), of a prefill call
(flash_attn_func, (1, 128, 2, 64), no_grad), and of a forward recording autograd on
(8, 1024, 16, 128) causal (the suite's 1k shape at half the batch: TMA descriptors),
and of the backward's host path alone at (1, 128, 16, 128) causal (called directly:
autograd runs backwards on its own thread, which cProfile does not see), top functions
by own time.

    python3 benchmarks/host_profile.py [--out DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats

import torch

import flashtile
from flashtile.kernels import backward


def profile(name, fn, out_dir, n=500):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("tottime")
    stats.print_stats(18)
    total = sum(v[2] for v in stats.stats.values()) / n * 1e6  # own time summed, us/call
    print(f"== {name}: {total:.0f} us of profiled host time per call")
    print("\n".join(text.getvalue().splitlines()[6:26]))
    with open(os.path.join(out_dir, f"host_profile_{name}.txt"), "w") as f:
        f.write(text.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    dev = dict(device="cuda", dtype=torch.bfloat16)
    qd = torch.randn(1, 1, 32, 128, **dev)
    kc, vc = (torch.randn(1, 1024, 8, 128, **dev) for _ in range(2))
    lens = torch.full((1,), 1024, dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(1, 128, 2, 64, **dev) for _ in range(3))
    with torch.no_grad():
        profile("decode", lambda: flashtile.flash_attn_with_kvcache(qd, kc, vc,
                                                                    cache_seqlens=lens),
                args.out)
        profile("prefill", lambda: flashtile.flash_attn_func(q, k, v, causal=True), args.out)
    qg, kg, vg = (torch.randn(8, 1024, 16, 128, requires_grad=True, **dev) for _ in range(3))
    profile("forward_grad", lambda: flashtile.flash_attn_func(qg, kg, vg, causal=True),
            args.out)
    q, k, v, do = (torch.randn(1, 128, 16, 128, **dev) for _ in range(4))
    out, lse, _ = flashtile.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    profile("backward", lambda: backward.attention_backward(
        do, q, k, v, out, lse, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=128,
        max_seqlen_k=128, softmax_scale=128 ** -0.5, window_left=-1, window_right=0,
        softcap=0.0, alibi_slopes=None, dropout_p=0.0, seed=None), args.out)


if __name__ == "__main__":
    main()
