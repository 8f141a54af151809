"""Two forward (or forward + backward) calls of one shape; the second is the one to profile:

    ncu --clock-control none -k regex:_fwd_kernel --launch-skip 1 --launch-count 1 \
        python3 benchmarks/one_forward.py --kernel gluon --head-dim 128 --seqlen 8192
    ncu ... -k regex:_bwd_kernel ... python3 benchmarks/one_forward.py --backward

--kernel gluon | triton picks forward / backward.USE_HOPPER_KERNEL; 16k tokens, model
dim 2048, bf16.
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
    args = ap.parse_args()
    forward.USE_HOPPER_KERNEL = backward.USE_HOPPER_KERNEL = args.kernel == "gluon"
    d, s = args.head_dim, args.seqlen
    q, k, v = (torch.randn(16384 // s, s, 2048 // d, d, device="cuda", dtype=torch.bfloat16,
                           requires_grad=args.backward) for _ in range(3))
    for _ in range(2):
        out = flashtile.flash_attn_func(q, k, v, causal=args.causal)
        if args.backward:
            out.backward(torch.randn_like(out))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
