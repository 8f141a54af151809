"""The suite's 1k causal forward rows timed as the suite times them (inputs requiring
grad, do_bench with its L2 flush) and under no_grad, alternating in one process, with
torch SDPA's flash backend: is the gap between the two a host effect or the GPU's?

    python3 benchmarks/grad_probe.py [--rounds 4] [--out DIR]
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
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    res = {}
    for r in range(args.rounds):
        for d in (64, 128, 256):
            for grad in ((True, False) if r % 2 == 0 else (False, True)):
                for name, fn in (("flashtile", flashtile_fn), ("sdpa-flash", SDPA["sdpa-flash"])):
                    label = f"d{d} causal 1k fwd {name} {'grad' if grad else 'no_grad'}"
                    res.setdefault(label, []).append(tflops(fn, d, grad))
    if args.out:
        with open(os.path.join(args.out, "grad_probe.json"), "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), tflops=res), f, indent=1)
    for label, xs in res.items():
        print(f"  {label:44s} {statistics.median(xs):6.0f}   [{min(xs):.0f}..{max(xs):.0f}]")


if __name__ == "__main__":
    main()
