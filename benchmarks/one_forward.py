"""Two forward (or forward + backward) calls of one shape; the second is the one to profile:

    ncu --clock-control none -k regex:_fwd_kernel --launch-skip 1 --launch-count 1 \
        python3 benchmarks/one_forward.py --kernel gluon --head-dim 128 --seqlen 8192
    ncu ... -k regex:_bwd_kernel ... python3 benchmarks/one_forward.py --backward

--kernel gluon | triton picks forward / backward.USE_HOPPER_KERNEL; 16k tokens, model
dim 2048, bf16; --fp8: e4m3 inputs (forward only; the Gluon FP8 row is switched on).
"""

from __future__ import annotations

import argparse

import torch

import flashtile
from flashtile.kernels import backward, forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", choices=["gluon", "triton"], default="gluon")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--fp8", action="store_true")
    args = ap.parse_args()
    forward.USE_HOPPER_KERNEL = backward.USE_HOPPER_KERNEL = args.kernel == "gluon"
    d, s = args.head_dim, args.seqlen
    q, k, v = (torch.randn(16384 // s, s, 2048 // d, d, device="cuda", dtype=torch.bfloat16,
                           requires_grad=args.backward) for _ in range(3))
    kw = {}
    if args.fp8:
        from flashtile.kernels import forward_hopper
        forward_hopper.ENABLED = set(forward_hopper.CONFIGS)
        q, k, v = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
        ones = torch.ones(q.shape[0], k.shape[2], device="cuda")
        kw = dict(q_descale=ones, k_descale=ones, v_descale=ones)
    for _ in range(2):
        out = flashtile.flash_attn_func(q, k, v, causal=args.causal, **kw)
        if args.backward:
            out.backward(torch.randn_like(out))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
