"""Why a tiny forward + backward costs flashtile ~3x torch SDPA's host time (session 10):
for flashtile and SDPA's flash backend at (1, 128, 16, 128) bf16 causal, time per call
of forward + torch.autograd.grad (a) back to back without synchronising (host rate),
(b) the same with autograd's device threads off (backward on the calling thread),
(c) GPU time of the same calls (CUDA events over the loop after a sync, so the host
cannot be the limit only if (c) < (a)); then cProfile of flashtile's forward + backward
with the device threads off (cProfile only sees the calling thread).

    python3 benchmarks/fwd_bwd_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time

import torch

import flashtile
from gluon_ab import peers  # (benchmarks/ is on the path when a script runs from it)


def flashtile_fn(q, k, v):
    return flashtile.flash_attn_func(q, k, v, causal=True)


_SDPA_FLASH = peers(("sdpa-flash",))["sdpa-flash"]  # (B, S, H, D), in its backend's context


def sdpa_fn(q, k, v):
    return _SDPA_FLASH(q, k, v, True)


def per_call_us(call, n=100, events=False) -> float:
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start = time.perf_counter()
    start_ev.record()
    for _ in range(n):
        call()
    end_ev.record()
    host = (time.perf_counter() - start) / n * 1e6
    torch.cuda.synchronize()
    return start_ev.elapsed_time(end_ev) / n * 1e3 if events else host


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    dev = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = (torch.randn(1, 128, 16, 128, requires_grad=True, **dev) for _ in range(3))
    do = torch.randn(1, 128, 16, 128, **dev)
    rows = {}
    for rnd in range(5):
        for name, fn in (("flashtile", flashtile_fn), ("sdpa-flash", sdpa_fn)):
            call = lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do)  # noqa: B023,E731
            rows.setdefault(f"{name} host", []).append(per_call_us(call))
            rows.setdefault(f"{name} wall (events)", []).append(per_call_us(call, events=True))
            with torch.autograd.set_multithreading_enabled(False):
                rows.setdefault(f"{name} host, one thread", []).append(per_call_us(call))
            fwd = lambda: fn(q, k, v)  # noqa: B023,E731
            rows.setdefault(f"{name} forward only host", []).append(per_call_us(fwd))
    print(f"{torch.cuda.get_device_name()}: fwd + bwd (1, 128, 16, 128) bf16 causal, us per call")
    for label, xs in rows.items():
        print(f"  {label:34s} {statistics.median(xs):7.1f}   [{min(xs):.1f}..{max(xs):.1f}]")
    call = lambda: torch.autograd.grad(flashtile_fn(q, k, v), (q, k, v), do)  # noqa: E731
    with torch.autograd.set_multithreading_enabled(False):
        for _ in range(20):
            call()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            call()
        torch.cuda.synchronize()
        prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    with open(os.path.join(args.out, "fwd_bwd_profile.txt"), "w") as f:
        f.write(text.getvalue())
    print("\n".join(text.getvalue().splitlines()[:22]))


if __name__ == "__main__":
    main()
