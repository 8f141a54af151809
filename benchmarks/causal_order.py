"""A/B of the query-block launch order (KernelConfig.longest_first) in one process.

    python3 benchmarks/causal_order.py --out "$OUT"

16k tokens, model dim 2048, causal (plus one non-causal control), bf16 forward and
forward + backward (the dQ kernel uses the same order), FP8 forward. Each case is
timed with the switch off, on, off, on (medians of `bench.benchmark_ms` on rotated
inputs); the table shows the best of each setting. Writes causal_order.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import config

E4M3 = torch.float8_e4m3fn
CASES = [  # (dtype, head dim, seqlen, causal, mode)
    *[("bf16", d, s, True, m) for d in (64, 128, 256) for s in (2048, 4096, 16384)
      for m in ("fwd", "fwd_bwd")],
    ("bf16", 128, 8192, False, "fwd"),
    *[("fp8", d, s, True, "fwd") for d in (128, 256) for s in (4096, 8192, 16384)],
]


def case_callable(dtype, d, seqlen, causal, mode):
    batch, heads = max(1, 16384 // seqlen), 2048 // d
    sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
    if dtype == "fp8":
        sets = [tuple(x.detach().to(E4M3) for x in s[:3]) for s in sets]
        ones = torch.ones(batch, heads, device="cuda")
        fn = bench.rotating(lambda q, k, v: flashtile.flash_attn_func(
            q, k, v, causal=causal, q_descale=ones, k_descale=ones, v_descale=ones), sets)
    else:
        fn = bench.pass_callable(
            lambda q, k, v, c: flashtile.flash_attn_func(q, k, v, causal=c), sets, causal, mode)
    return fn, bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, mode)


def set_longest_first(value: bool) -> None:
    """Every forward / dQ row of the config table launched in the given order."""
    for key, cfg in config._GPU_TABLE.items():
        if key[0] in ("fwd", "bwd_dq"):
            config._GPU_TABLE[key] = dataclasses.replace(cfg, longest_first=value)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    rows, results = [], []
    table = dict(config._GPU_TABLE)
    for dtype, d, seqlen, causal, mode in CASES:
        fn, flops = case_callable(dtype, d, seqlen, causal, mode)
        best = {False: 0.0, True: 0.0}
        for setting in (False, True, False, True):
            set_longest_first(setting)
            with torch.set_grad_enabled(mode != "fwd"):
                tf = bench.tflops(flops, bench.benchmark_ms(fn, "cuda"))
            best[setting] = max(best[setting], tf)
        config._GPU_TABLE.update(table)
        results.append(dict(dtype=dtype, d=d, seqlen=seqlen, causal=causal, mode=mode,
                            ascending_tflops=best[False], longest_first_tflops=best[True]))
        rows.append([dtype, str(d), str(seqlen), str(causal), mode, f"{best[False]:.0f}",
                     f"{best[True]:.0f}", f"{best[True] / best[False]:.3f}"])
        print(*rows[-1], flush=True)
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name()}, TFLOP/s, 16k tokens, model dim 2048")
    print(bench.table(["dtype", "d", "S", "causal", "mode", "ascending", "longest first",
                       "ratio"], rows))
    with open(os.path.join(args.out, "causal_order.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
