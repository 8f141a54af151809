"""Forward-kernel experiments: block shapes, pipeline depth and TMA descriptors, side by side
with torch SDPA's flash and cuDNN backends in one process (bf16, 16k tokens, model dim 2048).

    python3 benchmarks/fwd_variants.py --out "$OUT" [--seqlens 2048,8192] [--head-dims 64]
        [--variants "64,64,64,4,3,1;64,128,64,4,3,1"]

--variants replaces the list below: "d,BLOCK_M,BLOCK_N,warps,stages,tma[,longest_first]"
rows, ";"-separated (longest_first defaults to KernelConfig's, on).

Each variant overrides the forward row of the config table,
checks its output against SDPA flash (max abs diff), then times the forward under
no_grad (kernel time, no autograd bookkeeping). Prints a table; writes fwd_variants.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import config

# (head dim, BLOCK_M, BLOCK_N, warps, stages, descriptors): the adopted rows and their
# closest rivals. Earlier runs (results/NVIDIA_H200/experiments/) also compared
#   64: 128x64 w4 s3 ptr, 128x128 w4 / w8 s3 tma, 128x64 w4 s4 tma
#   128: 128x64 w8 s3 ptr / tma, 128x128 w8 s2 tma, 128x128 w8 s3 ptr
#   256: 128x64 w8 s2 tma, 64x64 w4 s2 tma
# and FA4's lazy rescaling (fwd_variants_2_lazy.json), a kernel switch since removed
# because it lost 4-18 % (NOTES.md).
VARIANTS = [
    (64, 128, 64, 4, 3, True), (64, 128, 128, 4, 3, True),
    (128, 128, 128, 8, 3, True), (128, 128, 64, 8, 3, True),
    (256, 128, 64, 8, 2, False), (256, 128, 64, 8, 2, True),
]
PEERS = ["sdpa-flash", "sdpa-cudnn"]


def time_fwd(fn, sets, causal):
    call = bench.rotating(lambda q, k, v, do: fn(q, k, v, causal), sets)
    with torch.no_grad():
        return bench.benchmark_ms(call, "cuda")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", default="2048,8192")
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--variants", default=None)
    args = ap.parse_args()
    variants = VARIANTS if not args.variants else [
        tuple(int(x) for x in row.split(",")) for row in args.variants.split(";")]
    gpu = torch.cuda.get_device_name()
    peers, _ = bench.get_methods(PEERS)
    rows, results = [], []
    for seqlen in [int(s) for s in args.seqlens.split(",")]:
        for d in args.head_dims:
            batch, heads = 16384 // seqlen, 2048 // d
            sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
            for causal in (False, True):
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
                q, k, v, _ = sets[0]
                with torch.no_grad():
                    ref = bench._sdpa(q, k, v, causal)
                line = dict(seqlen=seqlen, d=d, causal=causal)
                for m in peers:
                    with m.context():
                        line[m.name] = bench.tflops(flops, time_fwd(m.fn, sets, causal))
                for vd, bm, bn, w, st, desc, *lf in variants:
                    if vd != d:
                        continue
                    row = config.KernelConfig(bm, bn, w, st, bool(desc), *map(bool, lf))
                    config._GPU_TABLE[("fwd", "16bit", d)] = row
                    name = (f"{bm}x{bn} w{w} s{st} {'tma' if desc else 'ptr'}"
                            + ("" if row.longest_first else " lf0"))
                    try:
                        fn = lambda q, k, v, c: flashtile.flash_attn_func(q, k, v, causal=c)
                        with torch.no_grad():
                            err = (fn(q, k, v, causal).float() - ref.float()).abs().max().item()
                        tf = bench.tflops(flops, time_fwd(fn, sets, causal))
                    except Exception as ex:
                        err, tf = float("nan"), 0.0
                        print(name, "failed:", bench.describe(ex))
                    results.append(dict(line, variant=name, tflops=tf, max_err_vs_flash=err))
                    rows.append([str(seqlen), str(d), str(causal), name, f"{tf:.0f}",
                                 f"{line['sdpa-cudnn']:.0f}", f"{line['sdpa-flash']:.0f}",
                                 f"{tf / line['sdpa-cudnn']:.2f}", f"{err:.1e}"])
                    print(*rows[-1], flush=True)
            del sets
            torch.cuda.empty_cache()
    print(f"\n{gpu}, bf16 forward TFLOP/s (no_grad), 16k tokens, model dim 2048")
    print(bench.table(["S", "d", "causal", "variant", "flashtile", "cuDNN", "flash",
                       "vs cuDNN", "err"], rows))
    with open(os.path.join(args.out, "fwd_variants.json"), "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, results=results), f, indent=1)


if __name__ == "__main__":
    main()
