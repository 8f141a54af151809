"""Decoding benchmark: flash_attn_with_kvcache (split-KV kernel) against memory bandwidth.

Run on a CUDA machine:

    python3 benchmarks/decode_bench.py --out "$OUT"

Decode step (Sq = 1), 32 query heads, 8 KV heads, d = 128, bf16, every sequence's
cache full (cache_seqlens = cache length). For B in {1, 8, 64, 256} and cache
length in {1k, 8k, 32k, 128k} (combinations whose K/V exceed --max-gb skipped):

* flashtile on a contiguous cache and on paged caches (page 16 and 256, pages
  randomly permuted over the same memory);
* torch SDPA (enable_gqa, else K/V expanded to 32 heads) and FlexAttention
  (compiled, enable_gqa) on the contiguous cache, and flash_attn itself if it is
  installed.

Metric: K/V bytes read per call / time, next to a measured device-to-device copy
bandwidth (torch copy of a 2 GiB tensor, read + write bytes counted). Times are
medians of triton.testing.do_bench_cudagraph (kernel time without Python launch
overhead; also the eager do_bench time for flashtile); small caches run on
several cache copies per call so that the L2 cache does not flatter them. Also
records flashtile's chosen num_splits, its max |difference| to SDPA, and a small
sweep of decode launch configurations (for tuning flashtile/kernels/decode.py).
Writes decode.json under --out and benchmarks/results/<gpu>/, prints a table last.
Everything runs in one process and stops starting new work at --budget seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch

import flashtile
from flashtile.kernels import decode as decode_mod
from flashtile.kernels.config import KernelConfig

H, HK, D = 32, 8, 128
DTYPE = torch.bfloat16
L2_FLUSH_BYTES = 256 * 2**20  # run enough cache copies per call to exceed the L2 cache
START = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - START


def log(*args):
    print(f"[{elapsed():6.1f}s]", *args, file=sys.stderr, flush=True)


def bench_ms(fn, graph=True) -> float:
    """Median ms of fn(): CUDA-graph replay when possible (kernel time), else eager."""
    from triton.testing import do_bench, do_bench_cudagraph
    fn()
    torch.cuda.synchronize()
    if graph:
        try:
            return float(do_bench_cudagraph(fn, rep=20, return_mode="median"))
        except Exception as ex:  # not capturable: fall back to eager timing
            log(f"  graph capture failed ({type(ex).__name__}: {str(ex)[:80]}), eager timing")
    return float(do_bench(fn, warmup=5, rep=20, return_mode="median"))


def copy_bandwidth() -> float:
    """Device-to-device copy GB/s of a 2 GiB tensor, read + write bytes."""
    src = torch.empty(2**30, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), graph=False)
    gbs = 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    return gbs


class Case:
    """Caches of one (batch, length) shape: `copies` independent K/V caches."""

    def __init__(self, batch, length):
        self.batch, self.length = batch, length
        self.kv_bytes = 2 * batch * length * HK * D * DTYPE.itemsize
        self.copies = max(1, min(32, math.ceil(L2_FLUSH_BYTES / self.kv_bytes)))
        gen = torch.Generator(device="cuda").manual_seed(0)
        mk = lambda *s: torch.randn(*s, device="cuda", dtype=DTYPE, generator=gen)
        self.q = [mk(batch, 1, H, D) for _ in range(self.copies)]
        self.k = [mk(batch, length, HK, D) for _ in range(self.copies)]
        self.v = [mk(batch, length, HK, D) for _ in range(self.copies)]
        self.seqlens = torch.full((batch,), length, dtype=torch.int32, device="cuda")

    def paged(self, page):
        """The same memory seen as pages, handed out in a random order."""
        pages = self.batch * self.length // page
        perm = torch.randperm(pages, device="cuda").to(torch.int32).view(self.batch, -1)
        view = lambda x: x.view(pages, page, HK, D)
        return [view(k) for k in self.k], [view(v) for v in self.v], perm

    def run_all(self, fn):
        """A callable that runs fn(i) on every copy."""
        return lambda: [fn(i) for i in range(self.copies)]


def flashtile_fn(case, layout, num_splits=0):
    if layout == "contiguous":
        ks, vs, table = case.k, case.v, None
    else:
        ks, vs, table = case.paged(int(layout.split("page")[1]))
    return case.run_all(lambda i: flashtile.flash_attn_with_kvcache(
        case.q[i], ks[i], vs[i], cache_seqlens=case.seqlens, block_table=table,
        num_splits=num_splits))


def sdpa_fn(case):
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    qs = [q.transpose(1, 2) for q in case.q]  # (B, H, 1, D)
    ks = [k.transpose(1, 2) for k in case.k]  # (B, Hk, L, D) views of the cache
    vs = [v.transpose(1, 2) for v in case.v]
    try:
        sdpa(qs[0], ks[0], vs[0], enable_gqa=True)
        return case.run_all(lambda i: sdpa(qs[i], ks[i], vs[i], enable_gqa=True)), "enable_gqa"
    except (TypeError, RuntimeError):
        rep = lambda x: x.repeat_interleave(H // HK, dim=1)
        return case.run_all(lambda i: sdpa(qs[i], rep(ks[i]), rep(vs[i]))), "repeat_interleave"


_flex = None


def flex_fn(case):
    global _flex
    from torch.nn.attention.flex_attention import flex_attention
    if _flex is None:
        _flex = torch.compile(flex_attention, dynamic=False)
    qs = [q.transpose(1, 2) for q in case.q]
    ks = [k.transpose(1, 2) for k in case.k]
    vs = [v.transpose(1, 2) for v in case.v]
    return case.run_all(lambda i: _flex(qs[i], ks[i], vs[i], enable_gqa=True))


def flash_attn_fn(case):
    from flash_attn import flash_attn_with_kvcache
    return case.run_all(lambda i: flash_attn_with_kvcache(case.q[i], case.k[i], case.v[i],
                                                          cache_seqlens=case.seqlens))


def measure(name, make, case, copy_gbs, **extra):
    row = dict(method=name, batch=case.batch, cache_len=case.length,
               kv_bytes=case.kv_bytes, copies=case.copies, **extra)
    try:
        fn = make()
        if isinstance(fn, tuple):
            fn, row["variant"] = fn
        ms = bench_ms(fn) / case.copies
        row.update(ms=ms, gbs=case.kv_bytes / (ms * 1e-3) / 1e9)
        row["frac_of_copy"] = row["gbs"] / copy_gbs
    except Exception as ex:  # OOM, unsupported shape, missing package
        row["error"] = f"{type(ex).__name__}: {str(ex)[:160]}"
        torch.cuda.empty_cache()
    log(f"{name:22s} B={case.batch:<4d} L={case.length:<7d} "
        + (f"{row['ms'] * 1e3:9.1f} us {row['gbs']:7.0f} GB/s" if "ms" in row
           else row["error"][:80]))
    return row


def splits_chosen(case):
    cfg = decode_mod.decode_config(H // HK, D, DTYPE)
    rows = math.ceil(H // HK / cfg.block_m)
    return decode_mod.choose_num_splits(case.batch, HK, rows, case.length,
                                        torch.device("cuda"), cfg, D, DTYPE.itemsize)


def check_against_sdpa(case, n=4):
    """max |flashtile - SDPA in fp32| on the first n sequences of copy 0 (contiguous,
    paged 16, paged 256): a guard against a wrong fast kernel."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    n = min(n, case.batch)
    q, seqlens = case.q[0][:n], case.seqlens[:n]

    def reference(k, v):  # k, v: (n, L, Hk, D), the sequences' keys in order
        return sdpa(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                    v.transpose(1, 2).float(), enable_gqa=True).transpose(1, 2)

    diffs = {}
    for layout in ("contiguous", "page16", "page256"):
        if layout == "contiguous":
            k, v = case.k[0][:n], case.v[0][:n]
            out = flashtile.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens)
        else:
            ks, vs, table = case.paged(int(layout[4:]))
            table = table[:n].contiguous()
            out = flashtile.flash_attn_with_kvcache(q, ks[0], vs[0], cache_seqlens=seqlens,
                                                    block_table=table)
            # The shuffled pages hold other sequences' keys: gather what the table says.
            k, v = (x[0][table.long()].reshape(n, -1, HK, D) for x in (ks, vs))
        diffs[layout] = (out.float() - reference(k, v)).abs().max().item()
    return diffs


def config_sweep(case, copy_gbs, budget):
    """flashtile decode launch configs on one shape (contiguous and page 16/256)."""
    rows = []
    configs = [(64, 4, 2), (64, 4, 3), (64, 4, 4), (32, 4, 3), (128, 4, 2), (128, 4, 3),
               (128, 8, 3), (256, 8, 2)]
    original = decode_mod.decode_config
    for layout in ("contiguous", "page16", "page256"):
        for block_n, warps, stages in configs:
            if elapsed() > budget:
                return rows
            cfg = KernelConfig(16, block_n, warps, stages)
            decode_mod.decode_config = lambda *a, cfg=cfg: cfg
            try:
                rows.append(measure(f"sweep n{block_n} w{warps} s{stages}",
                                    lambda: flashtile_fn(case, layout), case, copy_gbs,
                                    layout=layout, block_n=block_n, num_warps=warps,
                                    num_stages=stages))
            finally:
                decode_mod.decode_config = original
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    parser.add_argument("--max-gb", type=float, default=40.0, help="skip larger K/V caches")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which no new measurement starts")
    parser.add_argument("--no-flex", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args(argv)
    import triton

    gpu = torch.cuda.get_device_name()
    report = dict(gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                  flashtile=flashtile.__version__, heads=H, kv_heads=HK, head_dim=D,
                  dtype="bf16", seqlen_q=1,
                  sms=torch.cuda.get_device_properties(0).multi_processor_count)
    copy_gbs = copy_bandwidth()
    report["copy_gbs"] = copy_gbs
    log(f"copy bandwidth {copy_gbs:.0f} GB/s")
    try:
        import flash_attn  # noqa: F401
        have_fa = True
    except ImportError:
        have_fa = False
    shapes = [(b, n) for n in args.lengths for b in args.batches
              if 2 * b * n * HK * D * DTYPE.itemsize <= args.max_gb * 1e9]
    report["skipped"] = [(b, n) for n in args.lengths for b in args.batches
                         if (b, n) not in shapes]
    rows, checks = [], []
    flex_budget = 0.5 * args.budget  # FlexAttention compiles per shape: stop it early
    for b, n in shapes:
        if elapsed() > args.budget:
            log(f"budget reached, skipping B={b} L={n}")
            report.setdefault("not_run", []).append((b, n))
            continue
        case = Case(b, n)
        splits = splits_chosen(case)
        checks.append(dict(batch=b, cache_len=n, max_abs_diff_vs_sdpa=check_against_sdpa(case),
                           num_splits=splits))
        for layout in ("contiguous", "page16", "page256"):
            rows.append(measure(f"flashtile {layout}", lambda: flashtile_fn(case, layout), case,
                                copy_gbs, layout=layout, num_splits=splits))
        rows.append(_eager_row(case, copy_gbs, splits))
        rows.append(measure("flashtile nosplit", lambda: flashtile_fn(case, "contiguous", 1),
                            case, copy_gbs, layout="contiguous", num_splits=1))
        rows.append(measure("sdpa", lambda: sdpa_fn(case), case, copy_gbs, layout="contiguous"))
        if not args.no_flex and elapsed() < flex_budget:
            rows.append(measure("flex", lambda: flex_fn(case), case, copy_gbs,
                                layout="contiguous"))
        if have_fa:
            rows.append(measure("flash_attn", lambda: flash_attn_fn(case), case, copy_gbs,
                                layout="contiguous"))
        del case
        torch.cuda.empty_cache()
    report["rows"], report["checks"] = rows, checks
    if not args.no_sweep and elapsed() < args.budget:
        sweep_shape = (8, 32768) if (8, 32768) in shapes else shapes[0]
        case = Case(*sweep_shape)
        report["sweep_shape"] = sweep_shape
        report["sweep"] = config_sweep(case, copy_gbs, args.budget + 30)
        del case
    report["elapsed_s"] = elapsed()

    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           gpu.replace(" ", "_"))
    for folder in (args.out, results):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "decode.json"), "w") as f:
            json.dump(report, f, indent=1)
    _print_table(report)


def _eager_row(case, copy_gbs, splits):
    """flashtile timed eagerly (Python launch overhead included), contiguous cache."""
    row = dict(method="flashtile eager", batch=case.batch, cache_len=case.length,
               kv_bytes=case.kv_bytes, copies=case.copies, layout="contiguous",
               num_splits=splits)
    try:
        ms = bench_ms(flashtile_fn(case, "contiguous"), graph=False) / case.copies
        row.update(ms=ms, gbs=case.kv_bytes / (ms * 1e-3) / 1e9, frac_of_copy=0.0)
        row["frac_of_copy"] = row["gbs"] / copy_gbs
    except Exception as ex:
        row["error"] = f"{type(ex).__name__}: {str(ex)[:160]}"
    return row


def _print_table(report):
    methods = ["flashtile contiguous", "flashtile page16", "flashtile page256",
               "flashtile eager", "flashtile nosplit", "sdpa", "flex", "flash_attn"]
    by = {(r["method"], r["batch"], r["cache_len"]): r for r in report["rows"]}
    present = [m for m in methods if any(k[0] == m for k in by)]
    splits = {(c["batch"], c["cache_len"]): c for c in report["checks"]}
    print(f"GPU: {report['gpu']}, torch {report['torch']}, triton {report['triton']}, "
          f"bf16, H={H} Hk={HK} d={D}, Sq=1; copy bandwidth {report['copy_gbs']:.0f} GB/s "
          f"(read+write); numbers = K/V GB/s (CUDA-graph medians; 'eager' includes launch "
          f"overhead)")
    short = {"flashtile contiguous": "ft-contig", "flashtile page16": "ft-pg16",
             "flashtile page256": "ft-pg256", "flashtile eager": "ft-eager",
             "flashtile nosplit": "ft-nosplit", "sdpa": "sdpa", "flex": "flex",
             "flash_attn": "flash_attn"}
    print(f"{'B':>4} {'L':>7} {'KV MB':>8} {'split':>5} | "
          + " ".join(f"{short[m]:>10}" for m in present) + " | ft/copy  maxdiff")
    keys = sorted({(k[1], k[2]) for k in by})
    for b, n in keys:
        cells = []
        for m in present:
            r = by.get((m, b, n))
            cells.append(f"{r['gbs']:10.0f}" if r and "gbs" in r else f"{'-':>10}")
        c = splits.get((b, n), {})
        ft = by.get(("flashtile contiguous", b, n), {})
        frac = f"{ft['frac_of_copy']:7.2f}" if "frac_of_copy" in ft else f"{'-':>7}"
        diff = max(c.get("max_abs_diff_vs_sdpa", {"-": float("nan")}).values())
        print(f"{b:>4} {n:>7} {2 * b * n * HK * D * 2 / 1e6:8.1f} {c.get('num_splits', '-'):>5} | "
              + " ".join(cells) + f" | {frac}  {diff:.1e}")
    if report.get("sweep"):
        best = max((r for r in report["sweep"] if "gbs" in r), key=lambda r: r["gbs"],
                   default=None)
        if best:
            print(f"config sweep at B,L={report['sweep_shape']}: best {best['method']} "
                  f"{best['layout']} {best['gbs']:.0f} GB/s (default "
                  f"{by.get(('flashtile contiguous', *report['sweep_shape']), {}).get('gbs', 0):.0f})")
    if report.get("skipped"):
        print(f"skipped (K/V over the size limit): {report['skipped']}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
