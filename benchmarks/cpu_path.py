"""flashtile's PyTorch path on a CPU against torch SDPA on the same CPU, same process.

    python3 benchmarks/cpu_path.py [--out DIR] [--quick]

Three methods per shape: flashtile as shipped (plain options go to ATen's CPU
flash kernel, `flashtile.aten_cpu`), flashtile's chunked path (`aten_cpu.ENABLED`
off: what windows, softcap, ALiBi and dropout still take) and torch SDPA
(`enable_gqa` for GQA). Forward and forward + backward, medians of 5 timed runs
after a warm-up, inputs rotated over two random sets. Writes cpu_path.json under
`--out` (default benchmarks/results/cpu/); prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import flashtile
from flashtile import aten_cpu
from flashtile.bench import table

# (batch, seqlen, heads, kv heads, head dim, causal)
SHAPES = [(1, 1024, 16, 16, 64, False), (1, 1024, 16, 16, 64, True),
          (1, 1024, 16, 4, 128, True), (1, 4096, 16, 16, 64, True)]


def _flashtile(chunked: bool):
    def run(q, k, v, causal):
        aten_cpu.ENABLED = not chunked
        try:
            with flashtile.use_backend("torch"):
                return flashtile.flash_attn_func(q, k, v, causal=causal)
        finally:
            aten_cpu.ENABLED = True
    return run


def _sdpa(q, k, v, causal):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                         v.transpose(1, 2), is_causal=causal,
                                         enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)


METHODS = {"flashtile": _flashtile(False), "flashtile chunked": _flashtile(True),
           "sdpa": _sdpa}


def _time_ms(fn, input_sets, repeats: int) -> float:
    fn(*input_sets[0])
    times = []
    for i in range(repeats):
        args = input_sets[i % len(input_sets)]
        start = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _passes(method, causal):
    def fwd(q, k, v):
        with torch.no_grad():
            method(q, k, v, causal)

    def fwd_bwd(q, k, v):
        out = method(q, k, v, causal)
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu"))
    parser.add_argument("--quick", action="store_true", help="the first two shapes only")
    args = parser.parse_args()
    shapes = SHAPES[:2] if args.quick else SHAPES
    records, rows = [], []
    for dtype in (torch.float32, torch.bfloat16):
        for b, s, h, hk, d, causal in shapes:
            gen = torch.Generator().manual_seed(s + h + hk + d)
            sets = [[torch.randn(b, s, n, d, generator=gen).to(dtype).requires_grad_()
                     for n in (h, hk, hk)] for _ in range(2)]
            cells = {}
            for name, method in METHODS.items():
                for mode, fn in _passes(method, causal).items():
                    cells[(name, mode)] = _time_ms(fn, sets, repeats=5)
            records.append(dict(dtype=str(dtype).split(".")[-1], batch=b, seqlen=s, heads=h,
                                kv_heads=hk, head_dim=d, causal=causal,
                                ms={f"{n} {m}": t for (n, m), t in cells.items()}))
            for mode in ("fwd", "fwd+bwd"):
                ft, ch, sd = (cells[(n, mode)] for n in METHODS)
                rows.append([records[-1]["dtype"], f"{b}x{s} h{h}/{hk} d{d}",
                             "causal" if causal else "full", mode, f"{ft:.1f}", f"{ch:.1f}",
                             f"{sd:.1f}", f"{ft / sd:.2f}", f"{ch / sd:.2f}"])
    os.makedirs(args.out, exist_ok=True)
    info = dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                torch=torch.__version__, records=records)
    with open(os.path.join(args.out, "cpu_path.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"CPU: {info['cpu']}, {info['threads']} threads, torch {torch.__version__} (ms)")
    print(table(["dtype", "shape", "mask", "pass", "flashtile", "chunked", "sdpa",
                 "flashtile/sdpa", "chunked/sdpa"], rows))


if __name__ == "__main__":
    main()
