"""A/B of the Gluon backward (backward_hopper.py, backward_hopper_d256.py) against the
Triton backward, cuDNN and torch's flash backend, in one process.

    python3 benchmarks/gluon_bwd_ab.py --out "$OUT" [--seqlens 2048 16384] [--head-dims 128]
        [--config stages,consumer_regs,loader_regs ...]

16k tokens, model dim 2048 (FlashAttention's convention), bf16, backward only
(`bench.pass_callable(..., "bwd")`: the graph is built once per input set, the timed
call differentiates it again). flashtile runs with backward.USE_HOPPER_KERNEL on
("gluon", or "gluon:<config>" per --config row) and off ("triton"). Before timing,
each Gluon row's gradients are compared with the Triton kernels' (max |diff|).
Medians of `bench.benchmark_ms` on rotated inputs. Writes gluon_bwd_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import backward, backward_hopper
from gluon_ab import peers  # (this script's folder is on sys.path when it runs)


def _flashtile(use_gluon: bool, config=None):
    def run(q, k, v, causal):
        backward.USE_HOPPER_KERNEL = use_gluon
        backward_hopper.MIN_FLOPS = backward_hopper.MIN_FLOPS_D256 = 0.0
        if config is not None:
            backward_hopper.CONFIGS[q.shape[-1]] = config
        return flashtile.flash_attn_func(q, k, v, causal=causal)
    return run


def _methods(configs):
    methods = {"triton": _flashtile(False)}
    if configs:
        for c in configs:
            methods[f"gluon:{c}"] = _flashtile(True, tuple(int(x) for x in c.split(",")))
    else:
        methods["gluon"] = _flashtile(True)
    return {**methods, **peers()}


def _max_diff(fn, ref, sets, causal):
    q, k, v, do = sets[0]
    got = torch.autograd.grad(fn(q, k, v, causal), (q, k, v), do)
    want = torch.autograd.grad(ref(q, k, v, causal), (q, k, v), do)
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[128])
    ap.add_argument("--config", nargs="*", default=[])
    args = ap.parse_args()
    methods = _methods(args.config)
    gluons = [n for n in methods if n.startswith("gluon")]
    results, rows = [], []
    for d in args.head_dims:
        for causal in (False, True):
            for seqlen in args.seqlens:
                batch, heads = max(1, 16384 // seqlen), 2048 // d
                sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "bwd")
                diff = {n: _max_diff(methods[n], methods["triton"], sets, causal) for n in gluons}
                tf = {}
                for name, fn in methods.items():
                    call = bench.pass_callable(fn, sets, causal, "bwd")
                    tf[name] = bench.tflops(flops, bench.benchmark_ms(call, "cuda"))
                results.append(dict(d=d, causal=causal, seqlen=seqlen, tflops=tf,
                                    max_abs_diff_vs_triton=diff))
                best = max(tf[n] for n in gluons)
                rows.append([str(d), str(causal), str(seqlen)] + [f"{tf[n]:.0f}" for n in methods]
                            + [f"{best / tf['sdpa-cudnn']:.2f}", f"{best / tf['sdpa-flash']:.2f}",
                               f"{max(diff.values()):.1e}"])
                print(*rows[-1], flush=True)
    backward.USE_HOPPER_KERNEL = True
    print(f"\n{torch.cuda.get_device_name()}, backward TFLOP/s, bf16, 16k tokens, model dim 2048")
    print(bench.table(["d", "causal", "S", *methods, "gluon/cudnn", "gluon/flash",
                                "max |diff|"], rows))
    with open(os.path.join(args.out, "gluon_bwd_ab.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
