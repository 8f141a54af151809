"""FP8 (e4m3) forward against flashtile's bf16 forward, same process, same shapes.

    python3 benchmarks/fp8_bench.py --out "$OUT"     (or: python -m flashtile bench --fp8)

16k tokens, model dim 2048 (B = 16384 / S, H = 2048 / d), head dims 128 and 256,
seqlens 4k / 8k / 16k, causal and not. FP8 timings include everything flashtile
does per call (V's transpose into the K-major layout, the descale stack). Medians of
triton.testing.do_bench under no_grad on three rotated input sets. Also tries torch
SDPA (cuDNN) with fp8 inputs and records why it is not available if it fails.
Writes fp8_bench.json; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import config, forward

E4M3 = torch.float8_e4m3fn


# --variants: (label, config row or None for the table's, V transposed, keys permuted
# for a shuffle-free P) per head dim at S = 8k, not causal. (Session 3's layout
# variants -- V natural, P.V in bf16, TMA with V natural -- were all slower; NOTES.md.)
C = config.KernelConfig
# session 5 (fp8_variants_session5_*.json) also compared, at 8k non-causal: 128x128 w8
# s2 / s3 / s4 (pointers and TMA), 128x64 w8 s3, 128x256 w8 s2 TMA (d128); 128x128 w8 s2
# (both), 64x128 w4 s2, 64x64 w4 s3 (d256); keys in natural order (both)
VARIANTS = {
    128: [("table row", None, True, True),
          ("64x128 w4 s2 TMA", C(64, 128, 4, 2, True), True, True),
          ("64x128 w4 s4 TMA", C(64, 128, 4, 4, True), True, True),
          ("64x64 w4 s3 TMA", C(64, 64, 4, 3, True), True, True),
          ("64x64 w4 s4 TMA", C(64, 64, 4, 4, True), True, True)],
    256: [("table row", None, True, True),
          ("128x64 w8 s2 TMA", C(128, 64, 8, 2, True), True, True),
          ("128x64 w8 s4 TMA", C(128, 64, 8, 4, True), True, True),
          ("64x64 w4 s3 TMA", C(64, 64, 4, 3, True), True, True),
          ("64x128 w4 s2 TMA", C(64, 128, 4, 2, True), True, True),
          # pointer loads: the bf16 d256 row's choice (TMA lost 20% there; session 12)
          ("128x64 w8 s3 ptr", C(128, 64, 8, 3, False), True, True),
          ("128x64 w8 s2 ptr", C(128, 64, 8, 2, False), True, True)],
}


def variants(out_dir, seqlen=8192, causal=False, head_dims=(128, 256)):
    """Where FP8 time goes: one shape per head dim, the knobs of forward.py switched."""
    rows, results = [], []
    for d in head_dims:
        batch, heads = max(1, 16384 // seqlen), 2048 // d
        q, k, v = (torch.randn(batch, seqlen, heads, d, device="cuda") for _ in range(3))
        q8, k8, v8 = (x.to(E4M3) for x in (q, k, v))
        flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
        with torch.no_grad():
            bf = [x.bfloat16() for x in (q, k, v)]
            base = bench.tflops(flops, bench.benchmark_ms(
                lambda: flashtile.flash_attn_func(*bf, causal=causal), "cuda"))
            ref = flashtile.flash_attn_func(*bf, causal=causal).float()
            key = ("fwd", "fp8", d)
            saved = config._GPU_TABLE[key]
            for label, cfg, v_t, p_perm in VARIANTS[d]:
                config._GPU_TABLE[key] = cfg or saved
                forward.FP8_V_TRANSPOSED, forward.FP8_P_PERM = v_t, p_perm
                try:
                    out = flashtile.flash_attn_func(q8, k8, v8, causal=causal)
                    err = (out.float() - ref).abs().max().item()
                    tf = bench.tflops(flops, bench.benchmark_ms(
                        lambda: flashtile.flash_attn_func(q8, k8, v8, causal=causal), "cuda"))
                except Exception as ex:
                    err, tf = float("nan"), 0.0
                    print(label, "failed:", bench.describe(ex)[:300])
                finally:
                    config._GPU_TABLE[key] = saved
                    forward.FP8_V_TRANSPOSED, forward.FP8_P_PERM = True, True
                results.append(dict(d=d, seqlen=seqlen, causal=causal, variant=label, tflops=tf,
                                    bf16_tflops=base, max_diff_vs_bf16=err))
                rows.append([str(d), label, f"{tf:.0f}", f"{base:.0f}", f"{tf / base:.2f}",
                             f"{err:.2e}"])
                print(*rows[-1], flush=True)
    print(bench.table(["d", "variant", "fp8", "bf16", "fp8/bf16", "max diff"], rows))
    name = f"fp8_variants_{seqlen // 1024}k{'_causal' if causal else ''}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlens", default="4096,8192,16384")
    ap.add_argument("--variants", action="store_true",
                    help="the experiment grid instead, at the first --seqlens value")
    ap.add_argument("--causal", action="store_true", help="--variants: causal")
    ap.add_argument("--head-dims", default="128,256", help="--variants: which head dims")
    args = ap.parse_args()
    if args.variants:
        return variants(args.out, int(args.seqlens.split(",")[0]), args.causal,
                        [int(d) for d in args.head_dims.split(",")])
    run(args.out, [int(s) for s in args.seqlens.split(",")])


def run(out_dir: str, seqlens: list[int]) -> list[dict]:
    """The FP8-vs-bf16 table (also `python -m flashtile bench --fp8`); writes fp8_bench.json."""
    gpu = torch.cuda.get_device_name()
    rows, results = [], []
    for d in (128, 256):
        for seqlen in seqlens:
            batch, heads = max(1, 16384 // seqlen), 2048 // d
            sets = [tuple(x.detach() for x in s[:3])
                    for s in bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")]
            sets8 = [tuple(x.to(E4M3) for x in s) for s in sets]
            ones = torch.ones(batch, heads, device="cuda")
            for causal in (False, True):
                flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
                line = dict(d=d, seqlen=seqlen, causal=causal)
                bf16 = bench.rotating(lambda q, k, v: flashtile.flash_attn_func(
                    q, k, v, causal=causal), sets)
                fp8 = bench.rotating(lambda q, k, v: flashtile.flash_attn_func(
                    q, k, v, causal=causal, q_descale=ones, k_descale=ones, v_descale=ones),
                    sets8)
                with torch.no_grad():
                    line["bf16_tflops"] = bench.tflops(flops, bench.benchmark_ms(bf16, "cuda"))
                    line["fp8_tflops"] = bench.tflops(flops, bench.benchmark_ms(fp8, "cuda"))
                    try:
                        from torch.nn.attention import SDPBackend, sdpa_kernel
                        q, k, v = sets8[0]
                        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                            ms = bench.benchmark_ms(lambda: bench._sdpa(q, k, v, causal), "cuda")
                        line["sdpa_cudnn_fp8_tflops"] = bench.tflops(flops, ms)
                    except Exception as ex:
                        line["sdpa_cudnn_fp8"] = bench.describe(ex)[:120]
                line["speedup"] = line["fp8_tflops"] / line["bf16_tflops"]
                results.append(line)
                rows.append([str(d), str(seqlen), str(causal), f"{line['bf16_tflops']:.0f}",
                             f"{line['fp8_tflops']:.0f}", f"{line['speedup']:.2f}",
                             f"{line.get('sdpa_cudnn_fp8_tflops', float('nan')):.0f}"])
                print(*rows[-1], flush=True)
            del sets, sets8
            torch.cuda.empty_cache()
    if any("sdpa_cudnn_fp8" in r for r in results):
        print("torch SDPA cuDNN with fp8:", next(r["sdpa_cudnn_fp8"] for r in results
                                                 if "sdpa_cudnn_fp8" in r))
    print(f"\n{gpu}, forward TFLOP/s, 16k tokens, model dim 2048")
    print(bench.table(["d", "S", "causal", "bf16", "fp8", "fp8/bf16", "SDPA cuDNN fp8"], rows))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fp8_bench.json"), "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, results=results), f, indent=1)
    return results


if __name__ == "__main__":
    main()
