"""FP8 accuracy study: output RMSE against float64 attention, with and without outliers.

    python3 benchmarks/fp8_accuracy.py                  # CUDA if present, else CPU (small S)
    python3 benchmarks/fp8_accuracy.py --seqlen 4096 --head-dim 64 --causal

Inputs are standard normal, (B, S, H, D) = (2, --seqlen, 16, --head-dim) for q, k
and v; the outlier rows scale a few channels of q and k (the same channels in
both, as outlier features show up in real models) by x10 or x100. Each row
reports the output RMSE against attention computed in float64 from the
float32 inputs, for:

* bf16: flashtile on q, k, v rounded to bfloat16;
* fp8: `flashtile.quantize_fp8` (per (batch, KV head) amax scaling to e4m3)
  then flashtile's FP8 forward with the descales;
* fp8+incoherent: the same after the random Hadamard transform of q and k
  (``quantize_fp8(..., incoherent=True)``).

flashtile runs through its normal dispatch (Triton kernels on CUDA, the
PyTorch path elsewhere; --backend forces one). Writes JSON to --out (default
benchmarks/results/<device>/fp8_accuracy.json) and prints a markdown table last.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch

import flashtile

METHODS = ("bf16", "fp8", "fp8+incoherent")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def make_inputs(batch, seqlen, heads, head_dim, outlier_factor, n_outliers, seed, device):
    """float32 q, k, v; `n_outliers` channels of q and k times `outlier_factor`."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, seqlen, heads, head_dim, generator=gen) for _ in range(3))
    channels = torch.randperm(head_dim, generator=gen)[:n_outliers]
    if outlier_factor != 1:
        q[..., channels] *= outlier_factor
        k[..., channels] *= outlier_factor
    return [x.to(device) for x in (q, k, v)], channels.tolist()


def reference(q, k, v, causal, heads_per_chunk=2):
    """float64 attention, a few heads at a time so the score matrix stays small."""
    B, S, H, D = q.shape
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    mask = None
    if causal:
        mask = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)
    for h0 in range(0, H, heads_per_chunk):
        hs = slice(h0, h0 + heads_per_chunk)
        qh, kh, vh = (x[:, :, hs].double().transpose(1, 2) for x in (q, k, v))
        s = qh @ kh.transpose(-1, -2) / math.sqrt(D)
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        out[:, :, hs] = (torch.softmax(s, dim=-1) @ vh).transpose(1, 2)
    return out


def run_method(method, q, k, v, causal, seed):
    if method == "bf16":
        return flashtile.flash_attn_func(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                         causal=causal)
    *qkv8, qd, kd, vd = flashtile.quantize_fp8(q, k, v, incoherent=method != "fp8",
                                               seed=seed)
    return flashtile.flash_attn_func(*qkv8, causal=causal, q_descale=qd, k_descale=kd,
                                     v_descale=vd)


def study(args, device) -> list[dict]:
    rows = []
    settings = [(1.0, 0)] + [(f, args.outliers) for f in args.factors]
    for factor, n_out in settings:
        (q, k, v), channels = make_inputs(args.batch, args.seqlen, args.heads, args.head_dim,
                                          factor, n_out, args.seed, device)
        ref = reference(q, k, v, args.causal)
        ref_rms = ref.pow(2).mean().sqrt().item()
        row = dict(outlier_factor=factor, outlier_channels=channels, ref_rms=ref_rms)
        for method in METHODS:
            with torch.no_grad():
                out = run_method(method, q, k, v, args.causal, args.seed)
            rmse = (out.double() - ref).pow(2).mean().sqrt().item()
            row[method] = dict(rmse=rmse, rel_rmse=rmse / ref_rms,
                               finite=bool(torch.isfinite(out).all()))
        rows.append(row)
        print(f"outliers x{factor:g}: " + ", ".join(
            f"{m} {row[m]['rmse']:.3e}" for m in METHODS), flush=True)
    return rows


def table(rows) -> str:
    lines = ["| q/k outlier channels | " + " | ".join(f"{m} RMSE" for m in METHODS)
             + " | fp8 / fp8+incoherent |",
             "|---|" + "---|" * (len(METHODS) + 1)]
    for r in rows:
        what = "none" if r["outlier_factor"] == 1 else \
            f"{len(r['outlier_channels'])} × {r['outlier_factor']:g}"
        ratio = r["fp8"]["rmse"] / max(r["fp8+incoherent"]["rmse"], 1e-300)
        lines.append(f"| {what} | " + " | ".join(f"{r[m]['rmse']:.2e}" for m in METHODS)
                     + f" | {ratio:.1f}× |")
    return "\n".join(lines)


def main(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqlen", type=int, default=2048 if cuda else 512)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--outliers", type=int, default=4, help="outlier channels of q and k")
    p.add_argument("--factors", type=float, nargs="+", default=[10.0, 100.0])
    p.add_argument("--causal", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=flashtile.backend.BACKENDS, default="auto")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/"
                                               "<device>/fp8_accuracy.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = device_name(device)
    with flashtile.use_backend(args.backend):
        backend = flashtile.backend.resolve(device)
        rows = study(args, device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   name.replace(" ", "_"), "fp8_accuracy.json")
    if os.path.isdir(out) or out.endswith(os.sep):
        out = os.path.join(out, "fp8_accuracy.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    report = dict(device=name, implementation=backend, torch=torch.__version__,
                  config=config, rows=rows)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")
    print(f"\nFP8 output RMSE vs float64 on {name} ({backend}), B={args.batch} S={args.seqlen} "
          f"H={args.heads} D={args.head_dim}{' causal' if args.causal else ''}:\n")
    print(table(rows))


if __name__ == "__main__":
    main()
