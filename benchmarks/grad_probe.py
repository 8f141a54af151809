"""The suite's forward rows (1k causal by default) timed as the suite times them (inputs
requiring grad, do_bench with its L2 flush) and under no_grad, alternating in one process,
with torch SDPA's flash and cuDNN backends: is the gap between the two a host effect or
the GPU's?

    python3 benchmarks/grad_probe.py [--rounds 4] [--seqlen 1024] [--non-causal]
        [--head-dims 64 128 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
import triton

from flashtile import bench
from host_launch import SDPA, flashtile_fn


def tflops(fn, d, grad: bool, seqlen=1024, causal=True) -> float:
    batch, heads = 16384 // seqlen, 2048 // d
    sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
    call = bench.pass_callable(fn, sets, causal, "fwd")
    with torch.set_grad_enabled(grad):
        ms = triton.testing.do_bench(call, return_mode="median")
    return bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd") / ms / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=1024)
    ap.add_argument("--non-causal", action="store_true")
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    causal, kind = not args.non_causal, "causal" if not args.non_causal else "non-causal"
    peers = ("sdpa-flash", "sdpa-cudnn")
    print(torch.cuda.get_device_name(), flush=True)
    res = {}
    for r in range(args.rounds):
        for d in args.head_dims:
            for grad in ((True, False) if r % 2 == 0 else (False, True)):
                for name, fn in (("flashtile", flashtile_fn), *((p, SDPA[p]) for p in peers)):
                    label = (f"d{d} {kind} S{args.seqlen} fwd {name} "
                             f"{'grad' if grad else 'no_grad'}")
                    res.setdefault(label, []).append(tflops(fn, d, grad, args.seqlen, causal))
    if args.out:
        with open(os.path.join(args.out, "grad_probe.json"), "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), tflops=res), f, indent=1)
    for label, xs in res.items():
        print(f"  {label:44s} {statistics.median(xs):6.0f}   [{min(xs):.0f}..{max(xs):.0f}]")


if __name__ == "__main__":
    main()
