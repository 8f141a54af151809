"""GPU report for the kernels issue: peak memory at 64k tokens and a first speed table.

Run on a CUDA machine (through `device`):

    python3 benchmarks/gpu_report.py --out "$OUT"

Writes gpu_report.json (under --out and benchmarks/results/<gpu>/) and prints
a short table last. Every timing is a median of triton.testing.do_bench, taken
in this one process next to torch SDPA's flash, efficient and cuDNN backends,
on random inputs rotated between calls (the harness: `flashtile.bench`). The
fuller comparison (FlexAttention, flash-attn, fp16, head dim 256, memory per
method) is the suite: `python -m flashtile bench --suite`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os

import torch

import flashtile
from flashtile import bench

METHODS = ["flashtile", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn"]


def memory_report(seqlen=65536, heads=16, d=128) -> dict:
    """Peak allocated bytes of one forward + backward against the tensors it must hold."""
    [method], _ = bench.get_methods(["flashtile"])
    m = bench.peak_memory(method, seqlen, heads, d, torch.bfloat16, "cuda", causal=True)
    one = m["input_bytes"] // 4
    lse = heads * seqlen * 4
    return dict(seqlen=seqlen, heads=heads, head_dim=d, dtype="bf16",
                peak_allocated=m["peak_bytes"], allocated_before=m["baseline_bytes"],
                tensor_bytes_each=one, lse_bytes=lse, qkvo_do_dqdkdv_lse=8 * one + lse,
                finite=m["finite"])


def time_case(method, d, seqlen, causal, tokens=16384, model_dim=2048, dtype=torch.bfloat16):
    """Forward and backward ms for one method, FlashAttention's benchmark shapes."""
    row = bench.time_case(method, d, seqlen, causal, dtype, "cuda", ("fwd", "bwd"), tokens,
                          model_dim)
    if "unsupported" in row or "errors" in row:  # a backend that rejects the shape
        return dict(error=row.get("unsupported") or "; ".join(row["errors"].values()))
    return {k: row[k] for k in ("batch", "heads", "fwd_ms", "bwd_ms", "fwd_tflops", "bwd_tflops")}


def speed_report(seqlens, head_dims) -> list[dict]:
    rows = []
    methods, _ = bench.get_methods(METHODS)
    cases = list(itertools.product(head_dims, seqlens, (False, True)))
    for i, (d, s, causal) in enumerate(cases, 1):
        for method in methods:
            bench.progress(i, len(cases), f"{method.name} d={d} S={s} causal={causal}")
            row = time_case(method, d, s, causal)
            rows.append(dict(method=method.name, head_dim=d, seqlen=s, causal=causal, **row))
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
