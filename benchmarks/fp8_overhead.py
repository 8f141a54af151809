"""Where an FP8 forward call's GPU time goes besides the attention kernel, and what V's
one-pass transpose kernel (`kernels.layout`) saves over torch's strided copy.

    python3 benchmarks/fp8_overhead.py --out "$OUT"

16k tokens, model dim 2048, d128 and d256, S = 4k and 16k, causal and not:
1. per-kernel GPU time of one flash_attn_func FP8 call (torch.profiler, 10 calls);
2. the V transpose alone: torch's views (`reference.transposed_v_ref`) vs the kernel;
3. FP8 forward TFLOP/s with either transpose, and the bf16 forward, same process;
   the attention kernel's own TFLOP/s (from 1.) and the host's microseconds per call
   (30 calls issued without a sync: the GPU queue does not fill);
4. cProfile of 300 FP8 calls at d256 4k causal (the case furthest from its kernel time).
Writes fp8_overhead.json and host_profile_fp8_d256_4k_causal.txt; prints the tables last.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flashtile import bench
from flashtile.kernels import forward, forward_hopper, layout
from flashtile.reference import transposed_v_ref

from gluon_ab import call_flashtile
from host_profile import profile as host_profile

E4M3 = torch.float8_e4m3fn


def _torch_transpose(v, permute_keys):
    """layout.transposed_v's contract through torch's copy (the pre-session-16 path)."""
    vt = transposed_v_ref(v, permute_keys)
    return vt.permute(0, 3, 1, 2), vt, vt.stride(-2)


def kernel_breakdown(q, k, v, causal):
    """{kernel name: GPU microseconds per call} over 10 calls."""
    for _ in range(3):
        call_flashtile(q, k, v, causal, True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            call_flashtile(q, k, v, causal, True)
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0))
        if us > 0 and e.key and not e.key.startswith(("cuda", "aten::", "Memcpy")):
            out[e.key[:60]] = round(us / 10, 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def host_us(fn, calls=30):
    """Host microseconds per call of fn, issued back to back (no sync in between)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    results, rows_t, rows_f = [], [], []
    with torch.no_grad():
        for d in (128, 256):
            for seqlen in (4096, 16384):
                batch, heads = 16384 // seqlen, 2048 // d
                sets = [tuple(x.detach() for x in s[:3]) for s in
                        bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")]
                fp8 = [tuple(x.to(E4M3) for x in s) for s in sets]
                vs = [s[2] for s in fp8]
                t_torch = bench.benchmark_ms(bench.rotating(
                    lambda v: transposed_v_ref(v, True), [(v,) for v in vs]), "cuda")
                t_kern = bench.benchmark_ms(bench.rotating(
                    lambda v: layout.transposed_v(v, True), [(v,) for v in vs]), "cuda")
                gbs = 2 * vs[0].numel() / 1e6
                rows_t.append([f"d{d}", str(seqlen), f"{t_torch * 1e3:.0f}", f"{t_kern * 1e3:.0f}",
                               f"{gbs / t_torch:.0f}", f"{gbs / t_kern:.0f}"])
                ok = torch.equal(layout.transposed_v(vs[0], True)[1].view(torch.uint8),
                                 transposed_v_ref(vs[0], True).view(torch.uint8))
                for causal in (False, True):
                    flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "fwd")
                    tf = {"bf16": bench.tflops(flops, bench.benchmark_ms(bench.rotating(
                        lambda q, k, v: call_flashtile(q, k, v, causal, False), sets), "cuda"))}
                    for name, fn in (("fp8 torch-transpose", _torch_transpose),
                                     ("fp8 kernel-transpose", layout.transposed_v)):
                        forward.transposed_v = forward_hopper.transposed_v = fn
                        tf[name] = bench.tflops(flops, bench.benchmark_ms(bench.rotating(
                            lambda q, k, v: call_flashtile(q, k, v, causal, True), fp8), "cuda"))
                    forward.transposed_v = forward_hopper.transposed_v = layout.transposed_v
                    breakdown = kernel_breakdown(*fp8[0], causal)
                    tf["fp8 kernel only"] = flops / breakdown["_fwd_kernel"] / 1e6
                    host = {name: host_us(lambda: call_flashtile(*ins, causal, name == "fp8"))
                            for name, ins in (("bf16", sets[0]), ("fp8", fp8[0]))}
                    if d == 256 and seqlen == 4096 and causal:
                        host_profile("fp8_d256_4k_causal",
                                     lambda: call_flashtile(*fp8[0], causal, True), args.out, n=300)
                    results.append(dict(head_dim=d, seqlen=seqlen, causal=causal, tflops=tf,
                                        transpose_ms=dict(torch=t_torch, kernel=t_kern),
                                        transpose_bitwise_equal=ok, kernels_us=breakdown,
                                        host_us=host))
                    rows_f.append([f"d{d}", str(seqlen), str(causal)]
                                  + [f"{x:.0f}" for x in tf.values()]
                                  + [f"{tf['fp8 kernel-transpose'] / tf['bf16']:.2f}"]
                                  + [f"{host['bf16']:.0f}", f"{host['fp8']:.0f}"])
                    print(rows_f[-1], breakdown, flush=True)
    with open(os.path.join(args.out, "fp8_overhead.json"), "w") as f:
        json.dump(dict(gpu=gpu, results=results), f, indent=1)
    print(f"\n{gpu}: V transpose (B*S = 16k, H*d = 2048), microseconds and GB/s moved")
    print(bench.table(["d", "S", "torch us", "kernel us", "torch GB/s", "kernel GB/s"], rows_t))
    print(f"\n{gpu}: forward TFLOP/s")
    print(bench.table(["d", "S", "causal", "bf16", "fp8 torch-T", "fp8 kernel-T", "fp8 kernel",
                       "x bf16", "host us bf16", "host us fp8"],
                      rows_f))


if __name__ == "__main__":
    main()
