"""Launch-parameter A/B of the Gluon forward (forward_hopper.CONFIGS rows) against the
Triton forward, in one process: 16k tokens, model dim 2048, forward TFLOP/s.

    python3 benchmarks/gluon_variants.py --out "$OUT" --seqlen 16384 \
        --variants 128,3,3,240,24 64,2,2,240,24

A variant is block_n,k_stages,v_stages,consumer_regs,loader_regs. (Session 6's ping-pong
switch is gone with the code it switched; gluon_fwd_versions.py times whole module
versions.)
Writes gluon_variants_d<head dim>.json.
"""

from __future__ import annotations

import argparse
import json
import os

import sys

import torch

from flashtile import bench
from flashtile.kernels import forward, forward_hopper



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--dtypes", nargs="+", default=["16bit", "fp8"], choices=["16bit", "fp8"])
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gluon_ab
    d, seqlen = args.head_dim, args.seqlen
    batch, heads = max(1, 16384 // seqlen), 2048 // d
    sets = [tuple(x.detach() for x in s[:3])
            for s in bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")]
    sets8 = [tuple(x.to(torch.float8_e4m3fn) for x in s) for s in sets]
    results, rows = [], []
    for dtype in args.dtypes:
        use = sets8 if dtype == "fp8" else sets
        for causal in (False, True):
            flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
            tf, err, ref = {}, {}, None
            for name in ["triton", *args.variants]:
                gluon = name != "triton"
                if gluon:
                    fields = [int(x) for x in name.split(",")]
                    forward_hopper.CONFIGS[(dtype, d)] = tuple(fields[:5])
                fn = gluon_ab._flashtile(gluon, dtype == "fp8")
                call = bench.rotating(lambda q, k, v, fn=fn: fn(q, k, v, causal), use)
                with torch.no_grad():  # each variant's output against the Triton kernel's
                    out = fn(*use[0], causal).float()
                    ref = out if ref is None else ref
                    err[name] = (out - ref).abs().max().item()
                    tf[name] = bench.tflops(flops, bench.benchmark_ms(call, "cuda"))
            forward.USE_HOPPER_KERNEL = True
            results.append(dict(dtype=dtype, d=d, seqlen=seqlen, causal=causal, tflops=tf,
                                max_abs_diff_vs_triton=err))
            rows.append([dtype, str(causal)] + [f"{tf[n]:.0f}" for n in tf]
                        + [f"{max(err.values()):.1e}"])
            print(*rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name()}, d{d}, S={seqlen}, forward TFLOP/s")
    print(bench.table(["dtype", "causal", "triton", *args.variants, "max |diff|"], rows))
    name = f"gluon_variants_d{d}_{seqlen}_{'_'.join(args.dtypes)}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
