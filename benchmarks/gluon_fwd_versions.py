"""Versions of the Gluon forward (forward_hopper.py copies, config rows, ping-pong) timed
side by side with the Triton kernel and with flashtile's default bf16 forward, in one
process: 16k tokens, model dim 2048, forward TFLOP/s.

    python3 benchmarks/gluon_fwd_versions.py --out "$OUT" --dtypes fp8 --seqlens 4096 8192 \
        --versions base=.variants/forward_hopper_base.py \
                   tree=flashtile/kernels/forward_hopper.py \
                   tree_pp=flashtile/kernels/forward_hopper.py@pp \
                   s22=flashtile/kernels/forward_hopper.py@64,2,2,240,24

A version is name=path[@row][@pp][@drop...]: the module copy at path, its
CONFIGS row for (dtype, head dim) replaced by row in the copy's own format
(block_n,k_stages,v_stages,consumer_regs,loader_regs since session 13;
block_n,stages,consumer_regs,loader_regs before), ping-pong on for that row (copies that
had it), or diagnostic copies that drop pieces of the softmax (DROPS: noexp, nomax, nosum,
norescale; their outputs are WRONG on purpose, the time saved is what that work costs;
session 15). Every version's output is compared with the Triton kernel's (max |diff|, in
the JSON). The "bf16" column is flashtile's default dispatch in bf16 (issue #7 measures
FP8 against it).
Writes gluon_fwd_versions_d<head dim>_<dtypes>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from flashtile import bench
from flashtile.kernels import forward, forward_hopper
from gluon_ab import call_flashtile  # (this script's folder is on sys.path when it runs)
from module_copies import load_copy


# Diagnostic edits (outputs WRONG on purpose; the time a version saves is what the dropped
# work costs): the source line each replaces, and its replacement.
DROPS = {
    "noexp": ("p = gl.exp2(s * qk_scale - m_ref[:, None])",  # P's exp2 (MUFU)
              "p = s * qk_scale - m_ref[:, None]"),
    "nomax": ("m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)",  # the row max
              "m_new = gl.full([s.shape[0]], 4.0, gl.float32, gl.SliceLayout(1, s_layout))"),
    "nosum": ("l_new = l_i * alpha + gl.sum(p, 1)",  # the row sum
              "l_new = l_i * alpha + 1.0"),
    "norescale": ("acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]",
                  "acc = acc"),  # O's rescale
}


def _dropped(names):
    def edit(src: str) -> str:
        for name in names:
            old, new = DROPS[name]
            assert src.count(old) == 1, f"{name}: the copy's line is not where expected"
            src = src.replace(old, new)
        return src
    return edit


def _version(spec: str, folder: str, row: tuple[str, int]):
    """(name, module) for name=path[@config][@pp][@drop...], the row patched in the copy."""
    name, rest = spec.split("=", 1)
    path, *opts = rest.split("@")
    mod = load_copy(path, f"fwd_hopper_{name}", folder, _dropped([o for o in opts if o in DROPS]))
    for opt in opts:
        if opt == "pp":
            mod.PINGPONG = set(getattr(mod, "PINGPONG", set())) | {row}
        elif opt not in DROPS:
            mod.CONFIGS[row] = tuple(int(x) for x in opt.split(","))
    return name, mod


def _run(mod, fp8: bool):
    """fn(q, k, v, causal) through flashtile's forward with `mod` as its Gluon kernel
    (every row of mod enabled, any size); mod None: the Triton kernel; "default": the
    shipped dispatch."""
    def call(q, k, v, causal):
        forward.USE_HOPPER_KERNEL = mod is not None
        forward.forward_hopper = mod if mod not in (None, "default") else forward_hopper
        if mod not in (None, "default"):
            mod.ENABLED, mod.MIN_FLOPS = set(mod.CONFIGS), 0.0
        return call_flashtile(q, k, v, causal, fp8)
    return call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtypes", nargs="+", default=["fp8"], choices=["16bit", "fp8"])
    ap.add_argument("--versions", nargs="+", required=True)
    args = ap.parse_args()
    folder, d = tempfile.mkdtemp(), args.head_dim
    results, rows = [], []
    for dtype in args.dtypes:
        fp8 = dtype == "fp8"
        versions = dict(_version(v, folder, (dtype, d)) for v in args.versions)
        for causal in (False, True):
            for seqlen in args.seqlens:
                batch, heads = max(1, 16384 // seqlen), 2048 // d
                sets = [tuple(x.detach() for x in s[:3]) for s in
                        bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")]
                use = [tuple(x.to(torch.float8_e4m3fn) for x in s) for s in sets] if fp8 else sets
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
                bf16 = _run("default", False)
                tf = {"bf16": bench.tflops(flops, bench.benchmark_ms(bench.rotating(
                    lambda q, k, v: bf16(q, k, v, causal), sets), "cuda"))}
                err, ref = {}, None
                for name, mod in [("triton", None), *versions.items()]:
                    fn = _run(mod, fp8)
                    with torch.no_grad():
                        out = fn(*use[0], causal).float()
                    ref = out if ref is None else ref
                    err[name] = (out - ref).abs().max().item()
                    call = bench.rotating(lambda q, k, v, fn=fn: fn(q, k, v, causal), use)
                    tf[name] = bench.tflops(flops, bench.benchmark_ms(call, "cuda"))
                forward.forward_hopper = forward_hopper
                results.append(dict(dtype=dtype, causal=causal, seqlen=seqlen, tflops=tf,
                                    max_abs_diff_vs_triton=err))
                rows.append([dtype, str(causal), str(seqlen)] + [f"{x:.0f}" for x in tf.values()])
                print(*rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name()}, d{d}, forward TFLOP/s; versions: "
          + " ".join(args.versions))
    print(bench.table(["dtype", "causal", "S", *results[0]["tflops"]], rows))
    name = f"gluon_fwd_versions_d{d}_{'_'.join(args.dtypes)}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), versions=args.versions,
                       results=results), f, indent=1)


if __name__ == "__main__":
    main()
