"""A/B of the Gluon forward (forward_hopper.py) against the Triton forward, cuDNN and
torch's flash backend, in one process.

    python3 benchmarks/gluon_ab.py --out "$OUT" [--seqlens 2048 16384] [--fp8]

16k tokens, model dim 2048 (FlashAttention's convention), forward only. flashtile
is timed twice (every forward_hopper.CONFIGS row enabled): with
forward.USE_HOPPER_KERNEL on (Gluon) and off (Triton). With
--fp8 the FP8 forward (both kernels) is timed next to the bf16 Gluon forward.
Medians of `bench.benchmark_ms` on rotated inputs. Writes gluon_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import forward, forward_hopper

E4M3 = torch.float8_e4m3fn


def call_flashtile(q, k, v, causal, fp8: bool):
    """flash_attn_func; FP8 inputs with unit descales (also used by gluon_fwd_versions.py)."""
    if not fp8:
        return flashtile.flash_attn_func(q, k, v, causal=causal)
    ones = torch.ones(q.shape[0], k.shape[2], device=q.device)
    return flashtile.flash_attn_func(q, k, v, causal=causal, q_descale=ones, k_descale=ones,
                                     v_descale=ones)


def _flashtile(use_gluon: bool, fp8: bool):
    def run(q, k, v, causal):
        forward.USE_HOPPER_KERNEL = use_gluon
        forward_hopper.ENABLED = set(forward_hopper.CONFIGS)  # FP8 rows too
        forward_hopper.MIN_FLOPS = 0.0  # and every size
        return call_flashtile(q, k, v, causal, fp8)
    return run


def _methods(fp8: bool):
    methods = {"gluon": _flashtile(True, False), "triton": _flashtile(False, False)}
    if fp8:
        methods.update({"gluon-fp8": _flashtile(True, True), "triton-fp8": _flashtile(False, True)})
    return {**methods, **peers()}


def peers(names=("sdpa-cudnn", "sdpa-flash")) -> dict:
    """name -> fn(q, k, v, causal) for torch SDPA backends, each run in its backend's
    context (also used by gluon_bwd_ab.py and gluon_bwd_ablate.py)."""
    def run(method):
        def call(q, k, v, causal):
            with method.context():
                return method.fn(q, k, v, causal)
        return call
    return {name: run(bench.make_method(name)) for name in names}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--fp8", action="store_true")
    args = ap.parse_args()
    methods = _methods(args.fp8)
    results, rows = [], []
    for d in args.head_dims:
        for causal in (False, True):
            for seqlen in args.seqlens:
                batch, heads = max(1, 16384 // seqlen), 2048 // d
                sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
                sets = [tuple(x.detach() for x in s[:3]) for s in sets]
                sets8 = [tuple(x.to(E4M3) for x in s) for s in sets]
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
                tf = {}
                for name, fn in methods.items():
                    use = sets8 if name.endswith("fp8") else sets
                    call = bench.rotating(lambda q, k, v, fn=fn: fn(q, k, v, causal), use)
                    with torch.no_grad():
                        tf[name] = bench.tflops(flops, bench.benchmark_ms(call, "cuda"))
                forward.USE_HOPPER_KERNEL = True
                results.append(dict(d=d, causal=causal, seqlen=seqlen, tflops=tf))
                rows.append([str(d), str(causal), str(seqlen)] + [f"{tf[n]:.0f}" for n in methods]
                            + [f"{tf['gluon'] / tf['sdpa-cudnn']:.2f}"])
                print(*rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name()}, forward TFLOP/s, 16k tokens, model dim 2048")
    print(bench.table(["d", "causal", "S", *methods, "gluon/cudnn"], rows))
    with open(os.path.join(args.out, "gluon_ab.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
