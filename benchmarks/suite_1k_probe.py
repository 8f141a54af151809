"""Why the suite's 1k causal forwards (d64 / d128) run at ~180 TFLOP/s when the same call
timed alone runs at ~300: time flashtile's d128 1k causal forward the suite's way
(bench.time_case) and directly, fresh, then after the suite's first-call step, inside a
fresh TRITON_CACHE_DIR, and with and without warnings.catch_warnings.

    python3 benchmarks/suite_1k_probe.py [--profile | --alloc]

--profile: cProfile of the forward's host path in both states instead; --alloc: host and
wall time per call and new CUDA segments, fresh and after allocations / other calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings

import torch
import triton

import flashtile
from flashtile import bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

B, S, H, D = 16, 1024, 16, 128
FLOPS = bench.attention_flops(B, H, S, S, D, True, "fwd")
method = bench.make_method("flashtile")


def direct(label, quiet=False):
    sets = bench.make_inputs(B, S, H, D, torch.bfloat16, "cuda")
    call = bench.pass_callable(method.fn, sets, True, "fwd")
    ctx = warnings.catch_warnings() if quiet else contextlib.nullcontext()
    with ctx:
        if quiet:
            warnings.simplefilter("ignore")
        ms = triton.testing.do_bench(call, return_mode="median")
    print(f"{label:46s} {FLOPS / ms / 1e9:5.0f} TFLOP/s ({ms:.3f} ms)", flush=True)


def _warm_call():
    """A no-argument d128 1k causal forward (autograd on), warmed up."""
    q, k, v, _ = bench.make_inputs(B, S, H, D, torch.bfloat16, "cuda")[0]
    call = lambda: flashtile.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    for _ in range(10):
        call()
    torch.cuda.synchronize()
    return call


def host_us(label, n=50):
    """Host (enqueue) and wall time per call, and the CUDA segments (cudaMalloc) added."""
    call = _warm_call()
    seg0 = torch.cuda.memory_stats().get("segment.all.allocated", 0)
    t = time.perf_counter()
    for _ in range(n):
        call()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / n * 1e6
    seg = torch.cuda.memory_stats().get("segment.all.allocated", 0) - seg0
    print(f"{label:46s} host {host:4.0f} us, wall {wall:4.0f} us per call, "
          f"{seg} new segments", flush=True)


def main():
    print(torch.cuda.get_device_name())
    row = bench.time_case(method, D, S, True, torch.bfloat16, "cuda", ("fwd",))
    print(f"{'time_case, fresh process':46s} {row['fwd_tflops']:5.0f} TFLOP/s")
    direct("do_bench direct")
    direct("do_bench direct, catch_warnings(ignore)", quiet=True)
    host_us("fresh")
    with suite._fresh_triton_cache(True):
        for d in (64, 128, 256):
            for c in (False, True):
                bench.first_call(method, d, S, c, torch.bfloat16, "cuda", B, 2048 // d)
        row = bench.time_case(method, D, S, True, torch.bfloat16, "cuda", ("fwd",))
        print(f"{'time_case, fresh cache + first calls':46s} {row['fwd_tflops']:5.0f} TFLOP/s")
        direct("do_bench direct, fresh cache")
        host_us("fresh cache")
    row = bench.time_case(method, D, S, True, torch.bfloat16, "cuda", ("fwd",))
    print(f"{'time_case, cache dir restored':46s} {row['fwd_tflops']:5.0f} TFLOP/s")
    host_us("cache dir restored")


def profile_state(label, n=300):
    """cProfile of n forward calls (d128 1k causal, autograd on): top functions by own time."""
    import cProfile
    import io
    import pstats
    call = _warm_call()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        call()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("tottime")
    stats.print_stats(14)
    total = sum(v[2] for v in stats.stats.values()) / n * 1e6
    print(f"== {label}: {total:.0f} us of profiled host time per call")
    print("\n".join(line[:150] for line in text.getvalue().splitlines()[6:22]), flush=True)


def profile_main():
    print(torch.cuda.get_device_name())
    profile_state("fresh process")
    with suite._fresh_triton_cache(True):
        for d in (64, 128, 256):
            for c in (False, True):
                bench.first_call(method, d, S, c, torch.bfloat16, "cuda", B, 2048 // d)
    profile_state("after the suite's first calls")


def alloc_main():
    print(torch.cuda.get_device_name())
    host_us("fresh process")
    host_us("fresh process, again")
    x = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    del x
    host_us("after a 2 GiB allocation was freed")
    sets = bench.make_inputs(B, S, H, D, torch.bfloat16, "cuda")
    q, k, v, do = sets[0]
    torch.autograd.grad(flashtile.flash_attn_func(q, k, v, causal=True), (q, k, v), do)
    host_us("after one backward")
    with suite._fresh_triton_cache(True):
        for d in (64, 256):
            bench.first_call(method, d, S, True, torch.bfloat16, "cuda", B, 2048 // d)
    host_us("after first calls at d64 / d256")


if __name__ == "__main__":
    {"--profile": profile_main, "--alloc": alloc_main}.get(sys.argv[-1], main)()
