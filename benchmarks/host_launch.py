"""Host time per call with flashtile's launch cache on and off (flashtile/kernels/launcher.py),
in one process on the GPU, rounds alternating the order; and the suite's 1k-token causal
forwards (host-bound, NOTES.md session 9 §7) with the cache on / off and with the Gluon
forward's old MIN_FLOPS gate (1e11: the Triton kernel at 1k causal), and the 1k causal
backwards with the Gluon backward's gate at its default and at 0. torch SDPA's flash and
cuDNN backends are timed in the same process for reference.

    python3 benchmarks/host_launch.py [--rounds 5] [--out DIR]

Host µs: wall time of N back-to-back calls without synchronising, divided by N (calls
small enough that the GPU keeps up; the queue never fills at N = 100).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import torch
import triton

import flashtile
from flashtile import bench
from flashtile.kernels import backward_hopper, forward_hopper, launcher
from gluon_ab import peers  # (benchmarks/ is on the path when a script runs from it)

_cached_launch = launcher.CachedKernel.launch


def set_cache(on: bool) -> None:
    launcher.CachedKernel.launch = (_cached_launch if on else
                                    lambda self, grid, args, kwargs: self.fn[grid](*args, **kwargs))


# torch SDPA's backends, fn(q, k, v, causal) on (B, S, H, D), each in its backend's context
SDPA = peers(("sdpa-flash", "sdpa-cudnn"))


def tiny_cases():
    """(name, no-argument call): calls whose GPU work is a few microseconds."""
    g = torch.Generator(device="cuda").manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, device="cuda",  # noqa: E731
                                 dtype=torch.bfloat16)
    q, k, v = (rnd(1, 128, 16, 128) for _ in range(3))
    qg, kg, vg = (rnd(1, 128, 16, 128).requires_grad_() for _ in range(3))
    do = rnd(1, 128, 16, 128)
    # 2k tokens: past TMA_MIN_FLOPS, so the Gluon kernels with their TMA descriptors
    # (~0.1 ms forward, ~0.3 ms forward + backward on the GPU: still host-bound)
    q2, k2, v2 = (rnd(1, 2048, 16, 128).requires_grad_() for _ in range(3))
    do2 = rnd(1, 2048, 16, 128)
    qd = rnd(1, 1, 32, 128)
    kc, vc = rnd(1, 4096, 8, 128), rnd(1, 4096, 8, 128)
    lens = torch.full((1,), 4000, dtype=torch.int32, device="cuda")

    def fwd_bwd(fn=lambda q, k, v: flashtile.flash_attn_func(q, k, v, causal=True)):
        torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)

    def sdpa_fwd_bwd():
        fwd_bwd(lambda q, k, v: SDPA["sdpa-flash"](q, k, v, True))

    def fwd_bwd_2k(fn=lambda q, k, v: flashtile.flash_attn_func(q, k, v)):
        torch.autograd.grad(fn(q2, k2, v2), (q2, k2, v2), do2)

    def fwd_2k():
        with torch.no_grad():
            flashtile.flash_attn_func(q2, k2, v2)

    return [
        ("fwd no_grad S128", lambda: flashtile.flash_attn_func(q, k, v, causal=True)),
        ("fwd grad S128", lambda: flashtile.flash_attn_func(qg, kg, vg, causal=True)),
        ("fwd+bwd S128", fwd_bwd),
        ("decode 4k cache", lambda: flashtile.flash_attn_with_kvcache(
            qd, kc, vc, cache_seqlens=lens, causal=True)),
        ("sdpa-flash fwd S128", lambda: SDPA["sdpa-flash"](q, k, v, True)),
        ("sdpa-cudnn fwd S128", lambda: SDPA["sdpa-cudnn"](q, k, v, True)),
        ("sdpa-flash fwd+bwd S128", sdpa_fwd_bwd),
        ("fwd no_grad S2k (Gluon)", fwd_2k),
        ("fwd+bwd S2k (Gluon)", fwd_bwd_2k),
        ("sdpa-flash fwd+bwd S2k", lambda: fwd_bwd_2k(
            lambda q, k, v: SDPA["sdpa-flash"](q, k, v, False))),
    ]


def host_us(call, n=100) -> float:
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        call()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / n * 1e6


def suite_tflops(fn, head_dim, mode="fwd", causal=True, seqlen=1024) -> float:
    batch, heads = 16384 // seqlen, 2048 // head_dim
    sets = bench.make_inputs(batch, seqlen, heads, head_dim, torch.bfloat16, "cuda")
    call = bench.pass_callable(fn, sets, causal, mode)
    ms = triton.testing.do_bench(call, return_mode="median")
    return bench.attention_flops(batch, heads, seqlen, seqlen, head_dim, causal, mode) / ms / 1e9


def flashtile_fn(q, k, v, causal):
    return flashtile.flash_attn_func(q, k, v, causal=causal)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(torch.cuda.get_device_name(), flush=True)
    host = host_rounds(tiny_cases(), args.rounds, set_cache, "cache")
    fwd_gate, bwd_gate = forward_hopper.MIN_FLOPS, backward_hopper.MIN_FLOPS
    suite = {}
    variants = [("fwd flashtile cache=on", True, fwd_gate, bwd_gate),
                ("fwd flashtile cache=off", False, fwd_gate, bwd_gate),
                ("fwd flashtile fwd gate 1e11", True, 1e11, bwd_gate),
                ("bwd flashtile", True, fwd_gate, bwd_gate),
                ("bwd flashtile gluon bwd gate 0", True, fwd_gate, 0.0)]
    for r in range(max(2, args.rounds // 2)):
        for d in (64, 128):
            for label, on, fgate, bgate in variants:
                set_cache(on)
                forward_hopper.MIN_FLOPS, backward_hopper.MIN_FLOPS = fgate, bgate
                suite.setdefault(f"d{d} {label}", []).append(
                    suite_tflops(flashtile_fn, d, label[:3]))
            set_cache(True)
            forward_hopper.MIN_FLOPS, backward_hopper.MIN_FLOPS = fwd_gate, bwd_gate
            for peer, fn in SDPA.items():
                for mode in ("fwd", "bwd"):
                    suite.setdefault(f"d{d} {mode} {peer}", []).append(
                        suite_tflops(fn, d, mode))
    report(args.out, "host_launch.json", args.rounds, host, "suite_1k_causal_tflops", suite,
           "suite shape, 1k causal TFLOP/s (median over rounds)")


def host_rounds(cases, rounds: int, switch, name: str) -> dict:
    """Host us of each tiny case with `switch(True)` / `switch(False)`, rounds alternating
    which goes first; SDPA's cases (names starting "sdpa") only in the "on" half."""
    host: dict = {}
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            switch(on)
            for case, call in cases:
                if case.startswith("sdpa") and not on:
                    continue
                label = (case if case.startswith("sdpa")
                         else f"{case} {name}={'on' if on else 'off'}")
                host.setdefault(label, []).append(host_us(call))
    switch(True)
    return host


def report(out, filename: str, rounds: int, host: dict, suite_key: str, suite: dict,
           suite_title: str) -> None:
    """Write {gpu, host_us, suite_key: suite} to out/filename (when out) and print both."""
    result = {"gpu": torch.cuda.get_device_name(), "host_us": host, suite_key: suite}
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, filename), "w") as f:
            json.dump(result, f, indent=1)
    print(f"\nhost us per call (median of {rounds} rounds x 100 calls)")
    for label, xs in host.items():
        print(f"  {label:34s} {statistics.median(xs):7.1f}   [{min(xs):.1f}..{max(xs):.1f}]")
    print(suite_title)
    for label, xs in suite.items():
        print(f"  {label:40s} {statistics.median(xs):6.0f}   [{min(xs):.0f}..{max(xs):.0f}]")


if __name__ == "__main__":
    main()
