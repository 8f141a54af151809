"""flashtile's own host time per call, on a machine without a GPU: the CUDA dispatch
(Triton backend, the forward launcher's Python) runs on CPU tensors with the kernel
launch replaced by a no-op, so only flashtile's Python and torch's autograd remain.
d128, 16 x 1k tokens, causal, inputs requiring grad (the suite's 1k forward shape).

    python3 benchmarks/host_cpu.py [--calls 5000] [--profile]

(Triton's own launch binding is not included: benchmarks/host_profile.py on the GPU.)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

import flashtile
from flashtile import backend
from flashtile.kernels import forward


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    forward._fwd_kernel = _NoLaunch()
    backend.resolve = lambda device: "triton"  # (CPU tensors pass descriptor_ok: the TMA path)
    q, k, v = (torch.randn(16, 1024, 16, 128, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    call = lambda: flashtile.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    for _ in range(100):
        call()
    start = time.perf_counter()
    for _ in range(args.calls):
        call()
    print(f"{(time.perf_counter() - start) / args.calls * 1e6:.1f} us per call "
          "(flash_attn_func, autograd on, kernel launch stubbed)")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(500):
            call()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
        print(text.getvalue())


if __name__ == "__main__":
    main()
