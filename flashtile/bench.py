"""The benchmark harness: FLOPs, timing, inputs, and the attention methods compared.

One harness for ``python -m flashtile bench``, the suite (``benchmarks/suite.py``,
also ``python -m flashtile bench --suite``) and ``benchmarks/gpu_report.py``.
FlashAttention's conventions (flash-attn's ``benchmarks/benchmark_flash_attention.py``):

* shapes: batch x seqlen = 16k tokens, model dim 2048 (heads = 2048 / head dim);
* FLOPs: forward 4·B·H·Sq·Sk·D, halved when causal; backward 2.5x forward,
  forward + backward 3.5x;
* the forward is timed as training runs it (inputs require grad, autograd
  records); the backward is ``torch.autograd.grad`` on a retained graph;
* medians of ``triton.testing.do_bench`` (CUDA events or ``perf_counter`` where
  it cannot run), every method in the same process, on random normal inputs
  (never zeros, which would flatter the softmax) rotated among 3 sets so the L2
  cache holds none of them from the previous call.

A method is ``fn(q, k, v, causal) -> out`` on flash_attn's (B, S, H, D) layout;
one that raises for a shape is recorded as unsupported, never a crash.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import itertools
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import flashtile

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PASSES = ("fwd", "bwd", "fwd_bwd")


# ----------------------------------------------------------------------------- small helpers


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text table with a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def progress(i: int, n: int, message: str) -> None:
    print(f"[{i}/{n}] {message}", file=sys.stderr, flush=True)


def describe(ex: BaseException) -> str:
    """One line for an exception: its type and the first line of its message."""
    lines = str(ex).strip().splitlines()
    return f"{type(ex).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- FLOPs and timing


def attention_flops(batch: int, nheads: int, seqlen_q: int, seqlen_k: int, headdim: int,
                    causal: bool = False, mode: str = "fwd") -> float:
    """FLOPs of attention, FlashAttention's convention: forward 4·B·H·Sq·Sk·D
    (halved when causal), backward 2.5x forward; mode "fwd", "bwd" or "fwd_bwd"."""
    fwd = 4.0 * batch * nheads * seqlen_q * seqlen_k * headdim / (2 if causal else 1)
    return fwd * {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}[mode]


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


def benchmark_ms(fn, device: torch.device | str, repeats: int = 10, warmup: int = 2) -> float:
    """Median milliseconds per call of fn().

    CUDA: triton.testing.do_bench (median; its own time budget, L2 flushed between
    calls) when importable, else CUDA events over `repeats` calls. CPU:
    time.perf_counter over `repeats` calls after `warmup` ones.
    """
    if torch.device(device).type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            do_bench = None
        if do_bench is not None:
            return float(do_bench(fn, return_mode="median"))
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def rotating(fn, input_sets):
    """A no-argument callable that calls fn(*inputs) on the next input set each time."""
    sets = itertools.cycle(input_sets)
    return lambda: fn(*next(sets))


def make_inputs(batch: int, seqlen: int, heads: int, head_dim: int, dtype: torch.dtype,
                device, sets: int = 3, seed: int = 0) -> list[tuple]:
    """`sets` tuples (q, k, v, dout), each (B, S, H, D) standard normal; q, k, v require grad."""
    gen = torch.Generator(device=device).manual_seed(seed)
    one = lambda: torch.randn(batch, seqlen, heads, head_dim, generator=gen,  # noqa: E731
                              device=device, dtype=dtype)
    return [(one().requires_grad_(), one().requires_grad_(), one().requires_grad_(), one())
            for _ in range(sets)]


def pass_callable(fn, input_sets, causal: bool, mode: str):
    """A no-argument callable running one pass ("fwd", "bwd", "fwd_bwd") of fn on rotated sets.

    "bwd" builds one graph per input set first and differentiates it again each call
    (retain_graph), so only the backward is timed.
    """
    if mode == "fwd":
        return rotating(lambda q, k, v, do: fn(q, k, v, causal), input_sets)
    if mode == "fwd_bwd":
        return rotating(lambda q, k, v, do: torch.autograd.grad(fn(q, k, v, causal), (q, k, v), do),
                        input_sets)
    if mode == "bwd":
        graphs = [(fn(q, k, v, causal), (q, k, v), do) for q, k, v, do in input_sets]
        return rotating(lambda out, inputs, do: torch.autograd.grad(out, inputs, do,
                                                                    retain_graph=True), graphs)
    raise ValueError(f"mode must be one of {PASSES}, got {mode!r}")


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """An attention implementation: fn(q, k, v, causal) -> out on (B, S, H, D).

    `context` wraps every call of the method (SDPA's backend selection);
    `memory_fn`, when set, replaces fn in the memory sweep (FlexAttention compiled
    for any sequence length: allocations do not depend on static shapes); `jit`
    marks methods that compile on first use per shape or configuration, whose
    cost a time-limited run has to ration.
    """

    name: str
    fn: Callable
    context: Callable = contextlib.nullcontext
    memory_fn: Callable | None = None
    version: str | None = None
    jit: bool = False


_SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                  "sdpa-cudnn": "CUDNN_ATTENTION", "sdpa-math": "MATH"}
# flash-attn's packages, each with flash_attn_func(q, k, v, ..., causal=...): method -> module
_FLASH_ATTN = {"flash-attn-2": "flash_attn", "flash-attn-3": "flash_attn_interface",
               "flash-attn-4": "flash_attn.cute"}
ALL_METHODS = ("flashtile", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math",
               "flash-attn-2", "flash-attn-3", "flex", "flash-attn-4")
LABELS = {"flashtile": "flashtile", "sdpa": "torch SDPA", "sdpa-flash": "torch SDPA flash (FA2)",
          "sdpa-cudnn": "torch SDPA cuDNN", "sdpa-efficient": "torch SDPA efficient",
          "sdpa-math": "torch SDPA math (standard attention)",
          "flash-attn-2": "flash_attn (FA2)", "flash-attn-3": "flash_attn_interface (FA3)",
          "flex": "FlexAttention (compiled)", "flash-attn-4": "flash_attn.cute (FA4)"}


def _sdpa(q, k, v, causal):
    from torch.nn.functional import scaled_dot_product_attention

    # (B, S, H, D) -> SDPA's (B, H, S, D) and back: views, no copies
    out = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal)
    return out.transpose(1, 2)


def _first_output(fn):
    """flash_attn_interface and flash_attn.cute may return (out, lse): keep out."""
    def call(q, k, v, causal):
        out = fn(q, k, v, causal=causal)
        return out[0] if isinstance(out, (tuple, list)) else out
    return call


def _causal(b, h, q_idx, kv_idx):  # FlexAttention mask_mod; Sq = Sk here, so no corner question
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=None)
def _causal_block_mask(seqlen_q: int, seqlen_k: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    # eager create_block_mask (compiling it has pathological cold compile times);
    # created once per length, on the first call, never inside a timed call
    return create_block_mask(_causal, B=None, H=None, Q_LEN=seqlen_q, KV_LEN=seqlen_k,
                             device=device)


def _raise_recompile_limits() -> None:
    """One compiled graph per shape: keep Dynamo from falling back to eager after 8."""
    import torch._dynamo

    config = torch._dynamo.config
    for name, value in [("recompile_limit", 4096), ("cache_size_limit", 4096),
                        ("accumulated_recompile_limit", 16384),
                        ("accumulated_cache_size_limit", 16384)]:
        if hasattr(config, name):
            with contextlib.suppress(Exception):
                setattr(config, name, max(int(getattr(config, name)), value))


def _flex_method() -> Method:
    from torch.nn.attention.flex_attention import flex_attention

    _raise_recompile_limits()
    # static shapes for timing: Inductor then knows the lengths divide the block size
    # (IS_DIVISIBLE) and drops the bounds masks, which is flex's best case
    static = torch.compile(flex_attention, dynamic=False)

    def any_length(q, k, v, block_mask):  # its own code object, so its own Dynamo cache
        return flex_attention(q, k, v, block_mask=block_mask)

    dynamic = torch.compile(any_length)

    def mask(q, k, causal):
        return _causal_block_mask(q.shape[1], k.shape[1], str(q.device)) if causal else None

    def fn(q, k, v, causal):
        out = static(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                     block_mask=mask(q, k, causal))
        return out.transpose(1, 2)

    def memory_fn(q, k, v, causal):  # one compile for every sequence length of the sweep
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        for x in (qt, kt, vt):
            torch._dynamo.maybe_mark_dynamic(x, 2)
        return dynamic(qt, kt, vt, mask(q, k, causal)).transpose(1, 2)

    return Method("flex", fn, memory_fn=memory_fn, version=torch.__version__, jit=True)


def make_method(name: str) -> Method:
    """Build one method; raises (ImportError, AttributeError, ...) where it cannot run here."""
    if name == "flashtile":
        return Method(name, lambda q, k, v, c: flashtile.flash_attn_func(q, k, v, causal=c),
                      version=flashtile.__version__)
    if name == "sdpa":
        return Method(name, _sdpa, version=torch.__version__)
    if name in _SDPA_BACKENDS:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, _SDPA_BACKENDS[name])
        return Method(name, _sdpa, functools.partial(sdpa_kernel, backend),
                      version=torch.__version__)
    if name == "flex":
        return _flex_method()
    if name in _FLASH_ATTN:
        module = importlib.import_module(_FLASH_ATTN[name])
        # flash_attn.cute (FA4) compiles its CuTe DSL kernels on first use
        return Method(name, _first_output(module.flash_attn_func),
                      version=getattr(module, "__version__", None), jit=name == "flash-attn-4")
    raise ValueError(f"unknown method {name!r}; known: {', '.join(ALL_METHODS)}")


def get_methods(names) -> tuple[list[Method], dict[str, str]]:
    """The methods of `names` that can be built here (in that order), and
    {name: reason} for those that cannot (a package that is not installed)."""
    methods, missing = [], {}
    for name in names:
        try:
            methods.append(make_method(name))
        except ValueError:
            raise
        except Exception as ex:  # not installed, or this torch lacks it: skipped silently
            missing[name] = describe(ex)
    return methods, missing


def default_methods(device_type: str) -> list[str]:
    """What `bench --suite` times: on CUDA every method that exists here, on CPU the
    two that run there (FlexAttention on CPU means a C++ compile per shape)."""
    if device_type == "cuda":
        return ["flashtile", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flash-attn-2",
                "flash-attn-3", "flex", "flash-attn-4"]
    return ["flashtile", "sdpa"]


# ----------------------------------------------------------------------------- measurements


def time_case(method: Method, head_dim: int, seqlen: int, causal: bool, dtype: torch.dtype,
              device="cuda", passes=("fwd", "bwd"), tokens: int = 16384, model_dim: int = 2048,
              batch: int | None = None, heads: int | None = None, input_sets: int = 3,
              repeats: int = 10, seed: int = 0) -> dict:
    """Median ms and TFLOP/s of each pass of one method at one shape.

    FlashAttention's shapes unless given: batch = tokens // seqlen, heads =
    model_dim // head_dim. Returns {batch, heads, first_call_s, <pass>_ms,
    <pass>_tflops, ..., case_peak_bytes (CUDA)}; {..., "unsupported": reason} when
    the first forward raises, and {"errors": {pass: reason}} for a pass that raises
    (a method without backward, out of memory).
    """
    batch = batch or max(1, tokens // seqlen)
    heads = heads or max(1, model_dim // head_dim)
    row: dict = dict(batch=batch, heads=heads)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sets = make_inputs(batch, seqlen, heads, head_dim, dtype, device, input_sets,
                       seed=seed + seqlen * 1000 + head_dim)
    errors: dict[str, str] = {}
    with method.context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SDPA's "kernel not used because ..." warnings
        q, k, v, do = sets[0]
        start = time.perf_counter()
        try:  # first call: compiles where the method compiles, and checks support
            out = method.fn(q, k, v, causal)
            synchronize(device)
        except Exception as ex:
            return dict(row, unsupported=describe(ex))
        try:
            torch.autograd.grad(out, (q, k, v), do)
            synchronize(device)
        except Exception as ex:
            errors["bwd"] = errors["fwd_bwd"] = describe(ex)
        row["first_call_s"] = time.perf_counter() - start
        del out
        for mode in passes:
            if mode in errors:
                continue
            try:
                ms = benchmark_ms(pass_callable(method.fn, sets, causal, mode), device,
                                  repeats=repeats)
            except Exception as ex:  # out of memory, or a pass this method lacks
                errors[mode] = describe(ex)
                free_memory(device)
                continue
            flops = attention_flops(batch, heads, seqlen, seqlen, head_dim, causal, mode)
            row[f"{mode}_ms"] = ms
            row[f"{mode}_tflops"] = tflops(flops, ms)
    if errors:
        row["errors"] = {m: e for m, e in errors.items() if m in passes}
    if cuda:  # inputs, rotated sets and do_bench's L2 flush buffer included
        row["case_peak_bytes"] = torch.cuda.max_memory_allocated()
    return row


def first_call(method: Method, head_dim: int, seqlen: int, causal: bool, dtype: torch.dtype,
               device="cuda", batch: int = 1, heads: int = 1) -> dict:
    """Seconds of the very first forward and backward call (compilation included)."""
    q, k, v, do = make_inputs(batch, seqlen, heads, head_dim, dtype, device, sets=1)[0]
    synchronize(device)
    with method.context():
        start = time.perf_counter()
        out = method.fn(q, k, v, causal)
        synchronize(device)
        fwd = time.perf_counter() - start
        torch.autograd.grad(out, (q, k, v), do)
        synchronize(device)
        total = time.perf_counter() - start
    return dict(fwd_s=fwd, bwd_s=total - fwd, total_s=total)


def peak_memory(method: Method, seqlen: int, heads: int, head_dim: int, dtype: torch.dtype,
                device="cuda", causal: bool = False, batch: int = 1, warmup: bool = True) -> dict:
    """Peak CUDA memory of one forward + backward above what was allocated before it.

    Q, K, V and dO are allocated first and make `baseline_bytes`; `extra_bytes` =
    max_memory_allocated - baseline is what the method itself needs (output,
    gradients, LSE, workspaces). `floor_bytes` is what any exact method must hold:
    O, dQ, dK, dV and an fp32 LSE. A warm-up call first keeps compilation and
    one-time workspaces out of the number.
    """
    fn = method.memory_fn or method.fn
    q, k, v, do = make_inputs(batch, seqlen, heads, head_dim, dtype, device, sets=1)[0]
    with method.context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if warmup:
            torch.autograd.grad(fn(q, k, v, causal), (q, k, v), do)
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        grads = torch.autograd.grad(fn(q, k, v, causal), (q, k, v), do)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated()
    one = q.numel() * q.element_size()
    return dict(peak_bytes=peak, baseline_bytes=base, extra_bytes=peak - base,
                input_bytes=4 * one, floor_bytes=4 * one + batch * heads * seqlen * 4,
                finite=all(bool(torch.isfinite(g).all()) for g in grads))


# ----------------------------------------------------------------------------- the checkout's scripts


def benchmarks_dir() -> Path | None:
    """benchmarks/ of the checkout flashtile runs from (None for an installed package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks"
    return path if path.is_dir() else None


def load_benchmark_script(name: str):
    """benchmarks/<name>.py of this checkout as a module (ImportError outside a checkout)."""
    folder = benchmarks_dir()
    path = folder / f"{name}.py" if folder else None
    if path is None or not path.exists():
        raise ImportError(f"benchmarks/{name}.py: not found next to {Path(__file__).parent} "
                          "(the suite runs from a source checkout)")
    spec = importlib.util.spec_from_file_location(f"flashtile_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need their module registered
    spec.loader.exec_module(module)
    return module
