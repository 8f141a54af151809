"""Backward-kernel experiments, next to torch SDPA's flash and cuDNN backward in one process
(bf16, 16k tokens, model dim 2048).

    python3 benchmarks/bwd_variants.py --out "$OUT" [--dims 64,128,256] [--kernels dkdv,dq,fused]

Kernels: "dkdv" / "dq" time the (default) two-kernel backward with one candidate row of
the dK/dV or dQ table (the other kernel keeps its table row); "fused" times the dK/dV
kernel with dQ fused in (atomic reduce-adds; `backward.FUSED_DQ`), the first candidate
also with per-element atomics instead of TMA reduce-adds. Each variant's gradients are
compared with SDPA flash's. Prints a table; writes bwd_variants.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import backward, config

C = config.KernelConfig
CANDIDATES = {
    # session 5: 32x128 w8 is the spill-free shape at d64 / d128 (offline_compile.py);
    # session 3 also compared 32x128 w4 s3 tma, 64x128 w8 s3 tma (d64), 64x128 w8 s2
    # tma and 64x64 w4 s3 tma (d128)
    "dkdv": {64: [C(32, 128, 4, 3), C(32, 128, 8, 3), C(32, 128, 8, 2)],
             128: [C(64, 128, 8, 2), C(32, 128, 8, 3), C(32, 128, 8, 2)],
             256: [C(32, 32, 4, 2), C(32, 64, 8, 2), C(64, 64, 8, 1), C(16, 64, 4, 2),
                   C(32, 64, 8, 1), C(32, 32, 4, 2, True), C(64, 32, 4, 2)]},
    "dq": {64: [C(64, 64, 4, 3), C(64, 64, 4, 3, True), C(128, 64, 4, 3, True)],
           128: [C(64, 64, 4, 2), C(64, 64, 4, 3, True), C(128, 64, 8, 2, True)],
           256: [C(64, 32, 4, 2), C(64, 32, 4, 2, True), C(64, 64, 8, 2, True),
                 C(128, 32, 8, 2, True), C(32, 64, 4, 2, True), C(64, 64, 8, 1)]},
    "fused": {64: [C(32, 128, 4, 3), C(64, 128, 8, 3), C(64, 64, 4, 3)],
              128: [C(64, 128, 8, 2), C(64, 128, 8, 3), C(32, 128, 8, 2)],
              256: [C(32, 32, 4, 2), C(64, 64, 8, 1)]},
}
TABLE_KEY = {"dkdv": "bwd_dkdv", "dq": "bwd_dq", "fused": "bwd_dkdv_dq"}
PEERS = ["sdpa-flash", "sdpa-cudnn"]


def name(kernel, c, tma_reduce=True):
    text = (f"{kernel} {c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages} "
            f"{'tma' if c.tma else 'ptr'}")
    return text + ("" if kernel != "fused" else (" red" if tma_reduce else " atom"))


def grads(f, sets, causal):
    q, k, v, do = sets[0]
    return torch.autograd.grad(f(q, k, v, causal), (q, k, v), do)


def variants(kernels, d):
    for kernel in kernels:
        for i, c in enumerate(CANDIDATES[kernel][d]):
            yield kernel, c, True
            if kernel == "fused" and i == 0:
                yield kernel, c, False


def fn(q, k, v, causal):
    return flashtile.flash_attn_func(q, k, v, causal=causal)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", default="2048,8192")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--kernels", default="dkdv,dq,fused")
    args = ap.parse_args()
    kernels = args.kernels.split(",")
    gpu = torch.cuda.get_device_name()
    peers, _ = bench.get_methods(PEERS)
    rows, results = [], []
    for seqlen in [int(s) for s in args.seqlens.split(",")]:
        for d in [int(x) for x in args.dims.split(",")]:
            batch, heads = 16384 // seqlen, 2048 // d
            sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
            for causal in (False, True):
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "bwd")
                line = dict(seqlen=seqlen, d=d, causal=causal)
                for m in peers:
                    with m.context():
                        ms = bench.benchmark_ms(bench.pass_callable(m.fn, sets, causal, "bwd"),
                                                "cuda")
                        line[m.name] = bench.tflops(flops, ms)
                        if m.name == "sdpa-flash":
                            ref = grads(m.fn, sets, causal)
                for kernel, c, tma_reduce in variants(kernels, d):
                    key = (TABLE_KEY[kernel], "16bit", d)
                    saved = config._GPU_TABLE[key]
                    config._GPU_TABLE[key] = c
                    backward.FUSED_DQ, backward.DQ_REDUCE_TMA = kernel == "fused", tma_reduce
                    label = name(kernel, c, tma_reduce)
                    try:
                        g = grads(fn, sets, causal)
                        err = max((a.float() - b.float()).abs().max().item()
                                  for a, b in zip(g, ref))
                        ms = bench.benchmark_ms(bench.pass_callable(fn, sets, causal, "bwd"),
                                                "cuda")
                        tf = bench.tflops(flops, ms)
                    except Exception as ex:
                        err, tf = float("nan"), 0.0
                        print(label, "failed:", bench.describe(ex))
                    finally:
                        config._GPU_TABLE[key] = saved
                        backward.FUSED_DQ, backward.DQ_REDUCE_TMA = False, True
                    results.append(dict(line, variant=label, tflops=tf, max_err_vs_flash=err))
                    rows.append([str(seqlen), str(d), str(causal), label, f"{tf:.0f}",
                                 f"{line['sdpa-cudnn']:.0f}", f"{line['sdpa-flash']:.0f}",
                                 f"{tf / line['sdpa-cudnn']:.2f}", f"{err:.1e}"])
                    print(*rows[-1], flush=True)
            del sets
            torch.cuda.empty_cache()
    print(f"\n{gpu}, bf16 backward TFLOP/s, 16k tokens, model dim 2048")
    print(bench.table(["S", "d", "causal", "variant", "flashtile", "cuDNN", "flash",
                       "vs cuDNN", "err"], rows))
    with open(os.path.join(args.out, "bwd_variants.json"), "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, results=results), f, indent=1)


if __name__ == "__main__":
    main()
