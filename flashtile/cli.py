"""The command line: ``python -m flashtile {info,check,bench}``.

* ``info``  - versions, device, and which backend runs for CUDA / CPU tensors.
* ``check`` - flashtile against `flashtile.reference.attention_ref` over a grid of
  shapes and options, forward and the three gradients, with FlashAttention's
  error rule (`within_tolerance`). Exit code 1 on any failure.
* ``bench`` - flashtile against torch SDPA (and each SDPA backend on CUDA),
  forward and forward+backward, in ms and TFLOP/s; ``bench --suite [--quick]``
  runs the benchmark suite (``benchmarks/suite.py``) against every attention
  implementation installed: JSON, table and charts.

The timing pieces (`attention_flops`, `tflops`, `benchmark_ms`, `rotating`, the
methods) live in `flashtile.bench`, the one harness the CLI and ``benchmarks/`` share.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch

import flashtile
from flashtile import backend
from flashtile import bench as harness
from flashtile.bench import DTYPES, attention_flops, benchmark_ms, rotating, tflops  # noqa: F401
from flashtile.reference import attention_ref


# ----------------------------------------------------------------------------- helpers


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device(name: str | None) -> torch.device:
    device = torch.device(name or _default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("flashtile: --device cuda, but no CUDA device is available")
    return device


_progress = harness.progress
_table = harness.table


def _resolved(device_type: str) -> str:
    try:
        return backend.resolve(torch.device(device_type))
    except (NotImplementedError, ValueError) as e:
        return f"none ({e})"


# ----------------------------------------------------------------------------- info


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # ImportError or a broken install
        return "not installed"


def cmd_info(args: argparse.Namespace) -> int:
    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"
    rows = [("flashtile", flashtile.__version__), ("python", platform.python_version()),
            ("torch", torch.__version__ + cuda), ("triton", _version("triton")),
            ("numpy", _version("numpy"))]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"device cuda:{i}", f"{p.name}, capability {p.major}.{p.minor}, "
                         f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB"))
    else:
        rows.append(("device", f"CPU ({platform.machine()}, {torch.get_num_threads()} "
                               f"threads), no CUDA device"))
    try:
        setting = backend.get_backend()
    except ValueError as e:
        setting = f"invalid ({e})"
    rows += [("backend setting", f"{setting} (FLASHTILE_BACKEND="
                                 f"{os.environ.get('FLASHTILE_BACKEND', 'unset')})"),
             ("CUDA tensors run", _resolved("cuda")),
             ("CPU tensors run", _resolved("cpu")),
             ("TRITON_INTERPRET", f"{'on' if backend.interpreter_on() else 'off'} "
                                  f"({os.environ.get('TRITON_INTERPRET', 'unset')})")]
    try:
        rows.append(("fp32 precision", backend.get_fp32_precision()))
    except ValueError as e:
        rows.append(("fp32 precision", f"invalid ({e})"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    return 0


# ----------------------------------------------------------------------------- check


def within_tolerance(err: float, baseline_err: float, atol: float, factor: float = 2.0) -> bool:
    """FlashAttention's acceptance rule.

    `err` is flashtile's max abs error against the float64 reference, `baseline_err`
    that of plain PyTorch in the same low precision; flashtile passes when
    ``err <= factor * baseline_err + atol`` (factor 2 for the output, 3 for gradients).
    """
    return err <= factor * baseline_err + atol


def _atol(ref: torch.Tensor, dtype: torch.dtype, scale: float) -> float:
    """Noise floor: rounding noise of `ref` stored in `dtype` (FlashAttention 3's atol)
    plus float32 accumulation noise, 1e-6 x `scale` (the largest reference value of
    the case; covers gradients that are exactly 0, as with a single key)."""
    r = ref.detach().to(dtype)
    return 2 * ((r + 0.3 - 0.3) - r).abs().max().item() + 1e-6 * scale


@dataclass(frozen=True)
class Case:
    seqlen_q: int
    seqlen_k: int
    headdim: int
    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: bool = False
    gqa: bool = False  # 6 query heads on 2 KV heads (else 6 on 6)
    dropout: float = 0.0
    varlen: bool = False

    @property
    def name(self) -> str:
        tags = [t for t, on in [("causal", self.causal), (f"window{self.window}".replace(" ", ""),
                self.window != (-1, -1)), (f"softcap{self.softcap:g}", self.softcap > 0),
                ("alibi", self.alibi), ("gqa6:2", self.gqa), (f"dropout{self.dropout:g}",
                self.dropout > 0), ("varlen", self.varlen)] if on]
        return f"{self.seqlen_q}x{self.seqlen_k} d{self.headdim} {'+'.join(tags) or 'plain'}"


FEATURES = [{}, {"causal": True}, {"window": (24, 8)}, {"softcap": 2.0}, {"alibi": True},
            {"gqa": True}, {"dropout": 0.17}, {"varlen": True}]
COMBOS = [{"causal": True, "alibi": True, "gqa": True, "dropout": 0.17},
          {"window": (24, 8), "softcap": 2.0, "gqa": True, "varlen": True},
          {"causal": True, "varlen": True, "alibi": True, "dropout": 0.17}]


def check_cases(quick: bool) -> list[Case]:
    if quick:  # every option once, spread over the shapes and head dims
        shapes = [(1, 1, 59), (113, 203, 64), (256, 128, 128), (113, 203, 59), (256, 128, 64),
                  (113, 203, 128), (113, 203, 64), (256, 128, 59), (113, 203, 64)]
        return [Case(*shape, **f) for shape, f in zip(shapes, FEATURES + COMBOS[:1])]
    # (1, 1) with dropout is left out: dq and dk are exactly 0 there, and PyTorch's
    # softmax backward gets exactly 0 while FlashAttention's D = rowsum(dO * O) uses the
    # output rounded to fp16/bf16 (!= v once scaled by 1/(1-p)): ~eps(dtype) vs 0.
    shapes = [(1, 1), (1, 147), (113, 203), (128, 217), (256, 128), (256, 512)]
    return [Case(sq, sk, d, **f) for (sq, sk), d, f in
            itertools.product(shapes, (59, 64, 128), FEATURES + COMBOS)
            if (sq, sk) != (1, 1) or not f.get("dropout")]


def _lengths(total_max: int, batch: int, gen: torch.Generator) -> list[int]:
    lengths = torch.randint(1, total_max + 1, (batch,), generator=gen).tolist()
    lengths[-1] = total_max  # so max_seqlen is the case's seqlen
    return lengths


def run_case(case: Case, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Max abs errors of flashtile and of the low-precision baseline against float64.

    Returns {"out": (err, baseline_err, atol), "dq": ..., "dk": ..., "dv": ...}.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # flashtile's dropout seed comes from torch's RNG
    batch, heads = (3, 6) if case.varlen else (2, 6)
    kv_heads = 2 if case.gqa else heads
    if case.varlen:
        lq, lk = _lengths(case.seqlen_q, batch, gen), _lengths(case.seqlen_k, batch, gen)
        q_shape, k_shape = (sum(lq), heads, case.headdim), (sum(lk), kv_heads, case.headdim)
    else:
        q_shape = (batch, case.seqlen_q, heads, case.headdim)
        k_shape = (batch, case.seqlen_k, kv_heads, case.headdim)
    q, k, v = (torch.randn(s, generator=gen).to(device, dtype) for s in (q_shape, k_shape, k_shape))
    dout = torch.randn(q_shape, generator=gen).to(device, dtype)
    slopes = (torch.rand(batch, heads, generator=gen) * 0.3).to(device) if case.alibi else None
    options = dict(causal=case.causal, window_size=case.window, softcap=case.softcap)
    keep = None

    def ours(q, k, v):
        nonlocal keep
        kw = dict(options, alibi_slopes=slopes, dropout_p=case.dropout,
                  return_attn_probs=case.dropout > 0)
        if case.varlen:
            cu = [torch.tensor([0, *itertools.accumulate(n)], dtype=torch.int32, device=device)
                  for n in (lq, lk)]
            res = flashtile.flash_attn_varlen_func(q, k, v, *cu, max(lq), max(lk), **kw)
        else:
            res = flashtile.flash_attn_func(q, k, v, **kw)
        if case.dropout > 0:
            res, _, probs = res
            keep = probs >= 0  # S_dmask: negative = dropped
        return res

    def reference(q, k, v, upcast):
        kw = dict(options, dropout_p=case.dropout, upcast=upcast)
        if not case.varlen:
            return attention_ref(q, k, v, alibi_slopes=slopes, dropout_mask=keep, **kw)[0]
        outs, q0, k0 = [], 0, 0
        for b, (nq, nk) in enumerate(zip(lq, lk)):
            outs.append(attention_ref(
                q[None, q0:q0 + nq], k[None, k0:k0 + nk], v[None, k0:k0 + nk],
                alibi_slopes=None if slopes is None else slopes[b:b + 1],
                dropout_mask=None if keep is None else keep[b:b + 1, :, :nq, :nk], **kw)[0][0])
            q0, k0 = q0 + nq, k0 + nk
        return torch.cat(outs)

    def forward_backward(fn):
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        out = fn(*leaves)
        grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
        return [out.detach(), *grads]

    got = forward_backward(ours)  # first: it draws the dropout keep-mask
    ref = forward_backward(lambda *x: reference(*x, upcast=True))
    base = forward_backward(lambda *x: reference(*x, upcast=False))
    err = lambda a, r: (a.double() - r.double()).abs().max().item()  # noqa: E731
    scale = max(r.abs().max().item() for r in ref)
    return {name: (err(g, r), err(b, r), _atol(r, dtype, scale))
            for name, g, r, b in zip(("out", "dq", "dk", "dv"), got, ref, base)}


def _factor(quantity: str) -> float:
    return 2.0 if quantity == "out" else 3.0  # gradients get 3x


def _ratio(err: float, baseline_err: float) -> str:
    return f"{err / baseline_err:.2f}" if baseline_err > 0 else ("0" if err == 0 else "inf")


def cmd_check(args: argparse.Namespace) -> int:
    device = _device(args.device)
    names = args.dtype or (["fp16", "bf16"] if device.type == "cuda" else ["fp32", "fp16", "bf16"])
    cases = [c for c in check_cases(args.quick) if not args.filter or args.filter in c.name]
    jobs = [(c, n) for c in cases for n in names]
    print(f"flashtile check on {device} (backend {_resolved(device.type)}), {len(jobs)} runs",
          file=sys.stderr, flush=True)
    rows, failures, start = [], [], time.perf_counter()
    for i, (case, name) in enumerate(jobs, 1):
        _progress(i, len(jobs), f"{case.name} {name}")
        try:
            res = run_case(case, DTYPES[name], device, seed=i)
        except Exception as ex:  # a crash is a failure, reported and not fatal
            rows.append([case.name, name, "error", "-", "-", "FAIL"])
            failures.append(f"{case.name} {name}: {type(ex).__name__}: {ex}")
            continue
        bad = [f"{key} {e:.2e} > {_factor(key):g} x {b:.2e} + {atol:.1e}"
               for key, (e, b, atol) in res.items()
               if not within_tolerance(e, b, atol, _factor(key))]
        ratios = "/".join(_ratio(*res[g][:2]) for g in ("dq", "dk", "dv"))
        rows.append([case.name, name, f"{res['out'][0]:.2e}", f"{res['out'][1]:.2e}", ratios,
                     "FAIL" if bad else "PASS"])
        if bad:
            failures.append(f"{case.name} {name}: " + ", ".join(bad))
    print(_table(["case", "dtype", "out err", "baseline err", "dq/dk/dv ratio", "result"], rows))
    for f in failures:
        print("FAIL", f)
    n_fail = sum(r[-1] == "FAIL" for r in rows)
    summary = (f"{len(rows) - n_fail}/{len(rows)} passed" if not n_fail
               else f"{n_fail}/{len(rows)} FAILED")
    print(f"check: {summary} on {device}, backend {_resolved(device.type)}, "
          f"{time.perf_counter() - start:.1f} s")
    return 1 if n_fail else 0


# ----------------------------------------------------------------------------- bench


def _bench_suite(args: argparse.Namespace) -> int:
    """``bench --suite``: benchmarks/suite.py of this checkout (the issue's benchmark suite)."""
    device = _device(args.device)
    try:
        suite = harness.load_benchmark_script("suite")
    except ImportError as e:
        raise SystemExit(f"flashtile: {e}") from None
    cfg = suite.suite_config(
        device.type, quick=args.quick, dtypes=args.dtype, head_dims=args.headdim,
        seqlens=args.seqlens, causal=[True] if args.causal else None, passes=args.passes,
        methods=args.methods, memory_methods=args.methods, memory_seqlens=args.memory_seqlens,
        input_sets=args.input_sets, repeats=args.repeats, budget_s=args.budget_s or None)
    if args.budget_s == 0:
        cfg.budget_s = None
    suite.run(cfg, out=args.out, results_dir=args.results_dir, plot=not args.no_plot)
    return 0


def _bench_fp8(args: argparse.Namespace) -> int:
    """``bench --fp8``: benchmarks/fp8_bench.py, FP8 against bf16 forward (CUDA only)."""
    if _device(args.device).type != "cuda":
        raise SystemExit("flashtile: bench --fp8 needs a CUDA GPU (FP8 tensor cores)")
    try:
        fp8_bench = harness.load_benchmark_script("fp8_bench")
    except ImportError as e:
        raise SystemExit(f"flashtile: {e}") from None
    out = args.out or args.results_dir or str(
        harness.benchmarks_dir() / "results" / torch.cuda.get_device_name().replace(" ", "_"))
    fp8_bench.run(out, args.seqlens or [4096, 8192, 16384])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.fp8:
        return _bench_fp8(args)
    if args.suite or args.quick:
        return _bench_suite(args)
    device = _device(args.device)
    cuda = device.type == "cuda"
    dtypes = args.dtype or (["fp16"] if cuda else ["fp32"])
    seqlens = args.seqlens or ([1024, 2048, 4096, 8192, 16384] if cuda else [256, 1024])
    headdims = args.headdim or ([64, 128] if cuda else [64])
    repeats = args.repeats or (30 if cuda else 5)
    names = args.methods or (["flashtile", "sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn"]
                             if cuda else ["flashtile", "sdpa"])
    methods, _ = harness.get_methods(names)
    modes = args.passes or ["fwd", "fwd_bwd"]
    configs = list(itertools.product(dtypes, headdims, seqlens))
    total = len(configs) * len(methods) * len(modes)
    print(f"flashtile bench on {device} ({', '.join(dtypes)}, backend {_resolved(device.type)}),"
          f" {total} runs", file=sys.stderr, flush=True)
    rows, step = [], 0
    for name, d, s in configs:
        batch = args.batch or (max(1, 16384 // s) if cuda else 1)
        heads = args.nheads or (max(1, 2048 // d) if cuda else 4)
        for method in methods:
            step += len(modes)
            label = f"{method.name} {name} B={batch} H={heads} S={s} D={d}"
            _progress(step, total, label)
            res = harness.time_case(method, d, s, args.causal, DTYPES[name], device, modes,
                                    batch=batch, heads=heads, input_sets=args.input_sets,
                                    repeats=repeats)
            for mode in modes:
                if f"{mode}_ms" not in res:  # unsupported backend / shape, out of memory
                    why = res.get("unsupported") or res.get("errors", {}).get(mode, "")
                    print(f"  skipped {label} {mode}: {why}", file=sys.stderr, flush=True)
                    continue
                peak = f"{res['case_peak_bytes'] / 2**20:.0f}" if "case_peak_bytes" in res else "-"
                rows.append([method.name, mode, name, str(batch), str(heads), str(s), str(d),
                             f"{res[f'{mode}_ms']:.3f}", f"{res[f'{mode}_tflops']:.3g}", peak])
    print(_table(["impl", "mode", "dtype", "B", "H", "seqlen", "D", "ms", "TFLOP/s", "peak MiB"],
                 rows))
    print(f"bench: {len(rows)}/{total} timed on {device}, {', '.join(dtypes)}, "
          f"{'causal' if args.causal else 'non-causal'}")
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flashtile", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device and backend selection").set_defaults(func=cmd_info)

    device = dict(choices=["cpu", "cuda"], default=None,
                  help="default: cuda if available, else cpu")
    check = sub.add_parser("check", help="compare against the float64 reference")
    check.add_argument("--device", **device)
    check.add_argument("--quick", action="store_true", help="a few cases (~10 s on CPU)")
    check.add_argument("--dtype", nargs="+", choices=list(DTYPES),
                       help="default: fp32 fp16 bf16 on CPU, fp16 bf16 on CUDA")
    check.add_argument("-k", "--filter", help="only cases whose name contains this string")
    check.set_defaults(func=cmd_check)

    bench = sub.add_parser("bench", help="time flashtile against torch SDPA (--suite: against "
                           "everything installed, FlashAttention's benchmark grid)")
    bench.add_argument("--device", **device)
    bench.add_argument("--suite", action="store_true",
                       help="the full benchmark suite (benchmarks/suite.py): JSON, table, charts")
    bench.add_argument("--fp8", action="store_true",
                       help="FP8 (e4m3) forward against bf16, d 128 / 256 (CUDA; fp8_bench.py)")
    bench.add_argument("--quick", action="store_true",
                       help="the suite's < 4 minute subset (implies --suite)")
    bench.add_argument("--out", help="suite: also write results here (default: $OUT if set)")
    bench.add_argument("--results-dir", help="suite: default benchmarks/results/<GPU name>")
    bench.add_argument("--methods", nargs="+", choices=list(harness.ALL_METHODS), metavar="NAME",
                       help=f"of {', '.join(harness.ALL_METHODS)}; default: flashtile and torch "
                            "SDPA's backends; suite: everything installed")
    bench.add_argument("--passes", nargs="+", choices=list(harness.PASSES),
                       help="default: fwd fwd_bwd; suite: fwd bwd fwd_bwd (quick: fwd bwd)")
    bench.add_argument("--seqlens", type=int, nargs="+",
                       help="default: 1024..16384 on CUDA, 256 1024 on CPU")
    bench.add_argument("--headdim", type=int, nargs="+", help="default: 64 128 on CUDA, 64 on CPU")
    bench.add_argument("--causal", action="store_true", help="causal (suite: only causal)")
    bench.add_argument("--repeats", type=int, help="timed calls (CPU / CUDA events); "
                       "default 5 on CPU")
    bench.add_argument("--dtype", nargs="+", choices=list(DTYPES),
                       help="default: fp16 on CUDA, fp32 on CPU; suite: bf16 fp16")
    bench.add_argument("--batch", type=int, help="default: 16384 // seqlen on CUDA, 1 on CPU")
    bench.add_argument("--nheads", type=int, help="default: 2048 // headdim on CUDA, 4 on CPU")
    bench.add_argument("--input-sets", type=int, default=3, help="inputs rotated among (3)")
    bench.add_argument("--memory-seqlens", type=int, nargs="+",
                       help="suite: memory sweep lengths (default 1k..32k, quick 4k..32k)")
    bench.add_argument("--budget-s", type=float, help="suite: start no measurement after this "
                       "many seconds (quick: 160; 0: none)")
    bench.add_argument("--no-plot", action="store_true", help="suite: no charts")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
