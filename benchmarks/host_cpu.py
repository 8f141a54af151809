"""flashtile's own host time per call, on a machine without a GPU: the CUDA dispatch
(Triton backend, the forward launcher's Python) runs on CPU tensors with the compiled
kernel's launch replaced by a no-op, so flashtile's Python (its launch cache included)
and torch's autograd remain.
d128, 16 x 1k tokens, causal, inputs requiring grad (the suite's 1k forward shape);
--backward: forward and backward (torch.autograd.grad), 1 x 128 tokens; --decode: one
decode step (flash_attn_with_kvcache, 32 query heads, 8 KV heads, 4k-token cache);
--fp8: the same forward with e4m3 inputs and descales, no grad (V's transpose launch
stubbed too).

    python3 benchmarks/host_cpu.py [--calls 5000] [--backward | --decode | --fp8] [--profile]

(Triton's own `JITFunction.run`, which the launch cache skips on repeat calls, and the
C launcher are not included: benchmarks/host_launch.py measures them on the GPU.)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import os
import time
from types import SimpleNamespace

SORT = os.environ.get("HOST_CPU_SORT", "cumulative")  # or "tottime"

import torch

import flashtile
from flashtile import backend
from flashtile.kernels import backward, decode, forward, launcher, layout


class _Compiled:
    """A compiled kernel whose launch does nothing."""
    function = packed_metadata = "stub"

    def run(self, *args):
        pass


class _Jit:
    """Stands in for the jitted kernel behind a CachedKernel (first launch only)."""
    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        return lambda *args, **kwargs: _Compiled()


class _Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--decode", action="store_true", help="a decode step, 4k-token cache")
    ap.add_argument("--fp8", action="store_true", help="e4m3 forward with descales")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    for module in (forward, backward, decode, layout):
        for kernel in vars(module).values():
            if isinstance(kernel, launcher.CachedKernel):
                kernel.fn, kernel._direct = _Jit(kernel.fn.fn), True
    launcher.driver = SimpleNamespace(active=_Driver())
    backend.resolve = lambda device: "triton"  # (CPU tensors pass descriptor_ok: the TMA path)
    shape = (1, 128, 16, 128) if args.backward else (16, 1024, 16, 128)
    q, k, v, do = (torch.randn(shape, dtype=torch.bfloat16, requires_grad=i < 3)
                   for i in range(4))
    if args.decode:
        qd = torch.randn(1, 1, 32, 128, dtype=torch.bfloat16)
        kc, vc = (torch.randn(1, 4096, 8, 128, dtype=torch.bfloat16) for _ in range(2))
        lens = torch.full((1,), 4000, dtype=torch.int32)
        call = lambda: flashtile.flash_attn_with_kvcache(  # noqa: E731
            qd, kc, vc, cache_seqlens=lens, causal=True)
    elif args.fp8:
        q8, k8, v8 = (x.detach().to(torch.float8_e4m3fn) for x in (q, k, v))
        scales = [torch.ones(shape[0], shape[2]) for _ in range(3)]
        call = lambda: flashtile.flash_attn_func(  # noqa: E731
            q8, k8, v8, causal=True, q_descale=scales[0], k_descale=scales[1],
            v_descale=scales[2])
    elif args.backward:
        def call():
            out = flashtile.flash_attn_func(q, k, v, causal=True)
            torch.autograd.grad(out, (q, k, v), do)
    else:
        call = lambda: flashtile.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    for _ in range(100):
        call()
    start = time.perf_counter()
    for _ in range(args.calls):
        call()
    what = ("decode step" if args.decode else "forward + backward" if args.backward
            else "FP8 flash_attn_func" if args.fp8 else "flash_attn_func, autograd on")
    print(f"{(time.perf_counter() - start) / args.calls * 1e6:.1f} us per call "
          f"({what}, kernel launch stubbed)")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(500):
            call()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats(SORT).print_stats(30)
        print(text.getvalue())


if __name__ == "__main__":
    main()
