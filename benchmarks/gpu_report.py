"""GPU report for the kernels issue: peak memory at 64k tokens and a first speed table.

Run on a CUDA machine (through `device`):

    python3 benchmarks/gpu_report.py --out "$OUT"

Writes gpu_report.json (under --out and benchmarks/results/<gpu>/) and prints
a short table last. Every timing is a median of triton.testing.do_bench, taken
in this one process next to torch SDPA's flash, efficient and cuDNN backends,
on random inputs rotated between calls.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys

import torch

import flashtile
from flashtile.cli import attention_flops, benchmark_ms, rotating, tflops

SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                 "sdpa-cudnn": "CUDNN_ATTENTION"}


def memory_report(seqlen=65536, heads=16, d=128) -> dict:
    """Peak allocated bytes of one forward + backward against the tensors it must hold."""
    torch.cuda.empty_cache()
    make = lambda: torch.randn(1, seqlen, heads, d, device="cuda", dtype=torch.bfloat16)
    q, k, v = (make().requires_grad_() for _ in range(3))
    dout = make()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    one = q.numel() * q.element_size()
    lse = heads * seqlen * 4
    return dict(seqlen=seqlen, heads=heads, head_dim=d, dtype="bf16",
                peak_allocated=peak, allocated_before=base, tensor_bytes_each=one,
                lse_bytes=lse, qkvo_do_dqdkdv_lse=8 * one + lse,
                finite=bool(torch.isfinite(dq).all() and torch.isfinite(dk).all()))


def _sdpa_call(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def fn(q, k, v, causal):  # q (B, S, H, D) -> SDPA's (B, H, S, D)
        with sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[name])):
            return sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                        is_causal=causal).transpose(1, 2)
    return fn


def _methods():
    methods = {"flashtile": lambda q, k, v, c: flashtile.flash_attn_func(q, k, v, causal=c)}
    methods.update({name: _sdpa_call(name) for name in SDPA_BACKENDS})
    return methods


def time_case(fn, d, seqlen, causal, tokens=16384, model_dim=2048, dtype=torch.bfloat16):
    """Forward and backward ms for one method, FlashAttention's benchmark shapes."""
    batch, heads = max(1, tokens // seqlen), model_dim // d
    sets = []
    for _ in range(3):  # rotate inputs so the L2 cache does not flatter anyone
        q, k, v = (torch.randn(batch, seqlen, heads, d, device="cuda", dtype=dtype)
                   .requires_grad_() for _ in range(3))
        sets.append((q, k, v, torch.randn_like(q)))
    with torch.no_grad():
        fwd_ms = benchmark_ms(rotating(lambda q, k, v, do: fn(q, k, v, causal), sets), "cuda")
    graphs = [(fn(q, k, v, causal), (q, k, v), do) for q, k, v, do in sets]
    bwd = lambda out, inputs, do: torch.autograd.grad(out, inputs, do, retain_graph=True)
    bwd_ms = benchmark_ms(rotating(bwd, graphs), "cuda")
    flops = attention_flops(batch, heads, seqlen, seqlen, d, causal)
    return dict(batch=batch, heads=heads, fwd_ms=fwd_ms, bwd_ms=bwd_ms,
                fwd_tflops=tflops(flops, fwd_ms), bwd_tflops=tflops(2.5 * flops, bwd_ms))


def speed_report(seqlens, head_dims) -> list[dict]:
    rows = []
    cases = list(itertools.product(head_dims, seqlens, (False, True)))
    for i, (d, s, causal) in enumerate(cases, 1):
        for name, fn in _methods().items():
            print(f"[{i}/{len(cases)}] {name} d={d} S={s} causal={causal}", file=sys.stderr,
                  flush=True)
            try:
                row = time_case(fn, d, s, causal)
            except Exception as ex:  # a backend that rejects the shape
                row = dict(error=f"{type(ex).__name__}: {str(ex)[:120]}")
            rows.append(dict(method=name, head_dim=d, seqlen=s, causal=causal, **row))
            torch.cuda.empty_cache()
    return rows


def _print_speed(rows):
    key = lambda r: (r["head_dim"], r["seqlen"], r["causal"])
    print(f"{'d':>4} {'S':>6} {'causal':>6} | {'pass':4} | flashtile  sdpa-flash  sdpa-cudnn"
          f"  sdpa-eff | vs flash  vs cuDNN   (TFLOP/s)")
    for k, group in itertools.groupby(sorted(rows, key=key), key=key):
        by = {r["method"]: r for r in group}
        for p in ("fwd", "bwd"):
            val = lambda m: by.get(m, {}).get(f"{p}_tflops", float("nan"))
            ft = val("flashtile")
            print(f"{k[0]:>4} {k[1]:>6} {str(k[2]):>6} | {p:4} | {ft:9.0f} "
                  f"{val('sdpa-flash'):11.0f} {val('sdpa-cudnn'):11.0f} "
                  f"{val('sdpa-efficient'):9.0f} | {ft / val('sdpa-flash'):8.2f} "
                  f"{ft / val('sdpa-cudnn'):8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    gpu = torch.cuda.get_device_name()
    report = dict(gpu=gpu, torch=torch.__version__, flashtile=flashtile.__version__)
    import triton
    report["triton"] = triton.__version__
    if not args.skip_memory:
        report["memory"] = memory_report()
    report["speed"] = speed_report(args.seqlens, args.head_dims)
    results = os.path.join(os.path.dirname(__file__), "results", gpu.replace(" ", "_"))
    for folder in (args.out, results):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "gpu_report.json"), "w") as f:
            json.dump(report, f, indent=1)
    print(f"GPU: {gpu}, torch {torch.__version__}, triton {triton.__version__}, bf16")
    if "memory" in report:
        m = report["memory"]
        print(f"memory N={m['seqlen']} H={m['heads']} d={m['head_dim']}: peak "
              f"{m['peak_allocated'] / 2**30:.2f} GiB vs Q,K,V,O,dO,dQ,dK,dV,LSE "
              f"{m['qkvo_do_dqdkdv_lse'] / 2**30:.2f} GiB (finite={m['finite']})")
    _print_speed(report["speed"])


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
