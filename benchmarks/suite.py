"""The benchmark suite of the performance issue: flashtile against every attention
implementation this machine has, FlashAttention's way, all in one process.

    python -m flashtile bench --suite [--quick] [--out DIR]   # or: python benchmarks/suite.py [...]

What it measures (the harness is `flashtile.bench`):

* TFLOP/s of the forward, backward and forward + backward passes, bf16 and fp16,
  head dims 64/128/256, seqlens 512..16k, causal and not, at 16k tokens
  (batch = 16384 // seqlen) and model dim 2048 (heads = 2048 // head dim);
* peak memory of one forward + backward per method against seqlen (batch 1,
  16 heads, d = 128, up to 32k or until out of memory), above the inputs;
* flashtile's first call per (head dim, dtype, causal): forward + backward with
  the Triton compilation, on a fresh Triton cache (issue target: < 30 s).

`--quick` is the subset that runs in < 4 minutes on an H200, FlexAttention's
compilations included: bf16, d 64 and 128, seqlens 1k/4k/16k, fwd and bwd, memory
at 4k..32k, and a 160 s budget past which what is left is recorded as skipped.

Writes benchmarks/results/<GPU>/suite.json, rewritten after every measurement
(a killed run keeps what it measured), and a copy under --out (default $OUT);
prints a table on stdout (progress on stderr); draws the charts with
benchmarks/plot.py next to each JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

if __name__ == "__main__":  # run as a script: the checkout's flashtile, installed or not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import flashtile  # noqa: E402
from flashtile import bench  # noqa: E402

SUITE_KIND = "flashtile-bench-suite"
SUITE_FILE = "suite.json"
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- configuration


@dataclass
class SuiteConfig:
    """What the suite measures; `suite_config` gives the defaults per device and --quick."""

    device: str = "cuda"
    quick: bool = False
    dtypes: list = field(default_factory=lambda: ["bf16", "fp16"])
    head_dims: list = field(default_factory=lambda: [64, 128, 256])
    seqlens: list = field(default_factory=lambda: [512, 1024, 2048, 4096, 8192, 16384])
    causal: list = field(default_factory=lambda: [False, True])
    passes: list = field(default_factory=lambda: list(bench.PASSES))
    methods: list = field(default_factory=lambda: bench.default_methods("cuda"))
    tokens: int = 16384  # batch = tokens // seqlen
    model_dim: int = 2048  # heads = model_dim // head_dim
    input_sets: int = 3
    repeats: int = 10  # CPU timing only: do_bench keeps its own time budget
    # memory sweep: forward + backward at batch 1, fixed heads, until out of memory
    memory_methods: list = field(default_factory=lambda: [*bench.default_methods("cuda"),
                                                          "sdpa-math"])
    memory_seqlens: list = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    memory_heads: int = 16
    memory_head_dim: int = 128
    memory_dtype: str = "bf16"
    memory_causal: bool = False
    compile_times: bool = True  # flashtile's first call per (head dim, dtype, causal)
    fresh_triton_cache: bool = True  # so that first call really compiles
    budget_s: float | None = None  # past it, start no new measurement


def suite_config(device_type: str, quick: bool = False, **overrides) -> SuiteConfig:
    """The full grid on CUDA; `quick`: the < 4 minute subset; on CPU a tiny grid and no
    memory sweep (max_memory_allocated is CUDA's). Overrides that are None are ignored."""
    if device_type == "cuda":
        cfg = SuiteConfig(device="cuda", quick=quick)
        if quick:
            cfg = replace(cfg, dtypes=["bf16"], head_dims=[64, 128], seqlens=[1024, 4096, 16384],
                          passes=["fwd", "bwd"], memory_seqlens=[4096, 8192, 16384, 32768],
                          budget_s=160.0)
    else:
        cfg = SuiteConfig(device=device_type, quick=quick, dtypes=["fp32"], head_dims=[64],
                          seqlens=[64, 128] if quick else [128, 256], tokens=256, model_dim=128,
                          repeats=3, methods=bench.default_methods(device_type),
                          memory_methods=[], memory_seqlens=[], fresh_triton_cache=False)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def environment(device_type: str) -> dict:
    env = dict(device=device_type, flashtile=flashtile.__version__, torch=torch.__version__,
               cuda=torch.version.cuda, python=platform.python_version(),
               platform=platform.platform())
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device_type == "cuda":
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
    else:
        env["gpu"] = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    return env


def results_folder(env: dict) -> Path:
    """benchmarks/results/<GPU name, spaces as underscores> ('cpu' without a GPU)."""
    name = env["gpu"].replace(" ", "_") if env["device"] == "cuda" else "cpu"
    return HERE / "results" / name


def write_json(report: dict, folders) -> list[str]:
    """suite.json into each folder, atomically (a kill mid-write keeps the previous one)."""
    paths = []
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, SUITE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- running


class _Clock:
    """The run's time budget. Methods that compile per shape (`Method.jit`) each get an
    equal share of what is left when they start; the others only the overall budget."""

    def __init__(self, budget_s):
        self.start, self.budget_s, self.deadline = time.perf_counter(), budget_s, budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def ration(self, jit_methods_left: int) -> None:
        if self.budget_s is not None:
            left = max(0.0, self.budget_s - self.elapsed())
            self.deadline = self.elapsed() + left / max(1, jit_methods_left)

    def unration(self) -> None:
        self.deadline = self.budget_s

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.elapsed() > self.deadline


def _middle_first(seqlens) -> list[int]:
    """4k first, then outwards (longer first on ties): a method cut short by the budget
    still has every head dim and mask at the lengths that say most."""
    return sorted(seqlens, key=lambda s: (abs(math.log2(s / 4096)), -s))


@contextlib.contextmanager
def _fresh_triton_cache(enabled: bool):
    """A new, empty TRITON_CACHE_DIR for the run (removed afterwards)."""
    if not enabled:
        yield None
        return
    old = os.environ.get("TRITON_CACHE_DIR")
    folder = tempfile.mkdtemp(prefix="flashtile-triton-cache-")
    os.environ["TRITON_CACHE_DIR"] = folder
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = old
        shutil.rmtree(folder, ignore_errors=True)


def _memory_stats(device) -> bool:
    """Whether the device counts allocations (torch.cuda.max_memory_allocated)."""
    return torch.device(device).type == "cuda"


def _label(causal: bool) -> str:
    return "causal" if causal else "non-causal"


def run_suite(cfg: SuiteConfig, folders=()) -> dict:
    """Run the suite; the report is rewritten into `folders` after every measurement.

    Order: flashtile's first calls (before anything else compiles its kernels), then
    method by method its speed grid and its memory sweep, the methods that compile
    per shape (FlexAttention, flash_attn.cute) last. Under a budget these share what
    is left equally and take their shapes middle length first, so a cut-short run
    still has some of each; what is not measured is recorded as skipped.
    """
    device = cfg.device
    clock = _Clock(cfg.budget_s)
    order = [m for m in bench.ALL_METHODS if m in cfg.methods or m in cfg.memory_methods]
    order += [m for m in dict.fromkeys([*cfg.methods, *cfg.memory_methods]) if m not in order]
    methods, missing = bench.get_methods(order)
    methods.sort(key=lambda m: m.jit)  # stable: the per-shape compilers last
    env = environment(device)
    report = dict(
        kind=SUITE_KIND, version=1, environment=env, config=asdict(cfg),
        conventions=dict(
            flops="fwd 4*B*H*Sq*Sk*D (halved when causal); bwd 2.5x fwd; fwd_bwd 3.5x fwd",
            shapes=f"batch = {cfg.tokens} // seqlen, heads = {cfg.model_dim} // head_dim",
            timing=f"median of triton.testing.do_bench (CPU: perf_counter); inputs rotated "
                   f"among {cfg.input_sets} random sets; fwd with autograd recording, bwd = "
                   "autograd.grad on a retained graph",
            memory="max_memory_allocated during one fwd+bwd minus what was allocated before "
                   "it (Q, K, V, dO), after a warm-up call",
            flex="torch.compile(flex_attention, dynamic=False) per shape for speed; one "
                 "dynamic-length compile for the memory sweep"),
        methods={m.name: dict(available=True, label=bench.LABELS.get(m.name, m.name),
                              version=m.version) for m in methods},
        compile=[], speed=[], memory=[], finished=False)
    for name, reason in missing.items():  # not installed here: skipped, noted in the JSON
        report["methods"][name] = dict(available=False, label=bench.LABELS.get(name, name),
                                       reason=reason)
    shapes = [(dt, d, c, s) for dt in cfg.dtypes for d in cfg.head_dims for c in cfg.causal
              for s in cfg.seqlens]
    by_name = {m.name: m for m in methods}
    compile_jobs = ([(d, dt, c) for dt in cfg.dtypes for d in cfg.head_dims for c in cfg.causal]
                    if cfg.compile_times and "flashtile" in by_name else [])
    memory_on = _memory_stats(device)
    memory_seqlens = cfg.memory_seqlens if memory_on else []
    jobs = len(compile_jobs) + sum(
        len(shapes) * (m.name in cfg.methods) + len(memory_seqlens) * (m.name in cfg.memory_methods)
        for m in methods)
    print(f"flashtile bench suite on {env['gpu']}: {', '.join(m.name for m in methods)}"
          + (f" (not here: {', '.join(missing)})" if missing else "") + f"; {jobs} measurements"
          + (f", budget {cfg.budget_s:.0f} s" if cfg.budget_s else ""), file=sys.stderr,
          flush=True)
    step = 0

    def note(message: str) -> None:
        nonlocal step
        step += 1
        bench.progress(step, jobs, f"{clock.elapsed():5.0f}s {message}")
        bench.free_memory(device)
        write_json(report, folders)

    with _fresh_triton_cache(cfg.fresh_triton_cache and memory_on) as cache:
        report["triton_cache"] = "fresh" if cache else "as configured"
        # 1. flashtile's first calls: forward + backward, compilation included
        for d, dt, causal in compile_jobs:
            s = cfg.seqlens[0]
            row = dict(method="flashtile", head_dim=d, dtype=dt, causal=causal, seqlen=s,
                       batch=max(1, cfg.tokens // s), heads=max(1, cfg.model_dim // d))
            if clock.out_of_time():
                row["skipped"] = "time budget"
            else:
                try:
                    row.update(bench.first_call(by_name["flashtile"], d, s, causal,
                                                bench.DTYPES[dt], device, row["batch"],
                                                row["heads"]))
                except Exception as ex:
                    row["error"] = bench.describe(ex)
            report["compile"].append(row)
            note(f"first call flashtile d{d} {dt} {_label(causal)}: " + (
                f"{row['total_s']:.1f} s (fwd {row['fwd_s']:.1f} s)" if "total_s" in row
                else row.get("error") or row["skipped"]))

        # 2. method by method: the speed grid, then the memory sweep
        jit_left = sum(m.jit for m in methods)
        for method in methods:
            if method.jit:
                clock.ration(jit_left)
                jit_left -= 1
            else:
                clock.unration()
            grid = shapes if not method.jit else [
                (dt, d, c, s) for s in _middle_first(cfg.seqlens) for dt in cfg.dtypes
                for d in cfg.head_dims for c in cfg.causal]
            if method.name in cfg.methods:
                for dt, d, causal, s in grid:
                    row = dict(method=method.name, dtype=dt, head_dim=d, seqlen=s, causal=causal)
                    if clock.out_of_time():
                        row["skipped"] = "time budget"
                    else:
                        row.update(bench.time_case(
                            method, d, s, causal, bench.DTYPES[dt], device, cfg.passes,
                            cfg.tokens, cfg.model_dim, input_sets=cfg.input_sets,
                            repeats=cfg.repeats))
                    report["speed"].append(row)
                    note(f"{method.name} {dt} d{d} S={s} {_label(causal)}: "
                         f"{_speed_note(row, cfg.passes)}")
            if method.name in cfg.memory_methods:
                for s in memory_seqlens:
                    row = dict(method=method.name, seqlen=s, batch=1, heads=cfg.memory_heads,
                               head_dim=cfg.memory_head_dim, dtype=cfg.memory_dtype,
                               causal=cfg.memory_causal)
                    if any(r.get("oom") for r in report["memory"] if r["method"] == method.name):
                        row["skipped"] = "longer than an out-of-memory length"
                    elif clock.out_of_time():
                        row["skipped"] = "time budget"
                    else:
                        try:
                            row.update(bench.peak_memory(
                                method, s, cfg.memory_heads, cfg.memory_head_dim,
                                bench.DTYPES[cfg.memory_dtype], device, causal=cfg.memory_causal))
                        except torch.cuda.OutOfMemoryError as ex:
                            row.update(oom=True, error=bench.describe(ex))
                        except Exception as ex:
                            row["error"] = bench.describe(ex)
                    report["memory"].append(row)
                    note(f"memory {method.name} S={s}: " + (
                        f"{row['extra_bytes'] / 2**20:.0f} MiB above the inputs"
                        if "extra_bytes" in row else "out of memory" if row.get("oom")
                        else row.get("error") or row["skipped"]))
    report["wall_s"] = clock.elapsed()
    report["finished"] = True
    write_json(report, folders)
    return report


def _speed_note(row: dict, passes) -> str:
    if "skipped" in row:
        return row["skipped"]
    if "unsupported" in row:
        return "unsupported: " + row["unsupported"]
    parts = [f"{p} {_num(row[f'{p}_tflops'])} TFLOP/s" if f"{p}_tflops" in row else f"{p} failed"
             for p in passes]
    return ", ".join(parts) + f" (first call {row['first_call_s']:.1f} s)"


# ----------------------------------------------------------------------------- the report as text


def _num(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.0f}"


def _seqlen(s: int) -> str:
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def format_report(report: dict) -> str:
    """The terminal summary: first calls, TFLOP/s per method and pass, memory, totals."""
    env, cfg = report["environment"], report["config"]
    out = [f"flashtile bench suite{' (quick)' if cfg.get('quick') else ''}: {env['gpu']}, "
           f"torch {env['torch']}, triton {env['triton']}, flashtile {env['flashtile']}"]
    if report["compile"]:
        rows = [[str(r["head_dim"]), r["dtype"], "yes" if r["causal"] else "no",
                 *([f"{r['fwd_s']:.1f}", f"{r['bwd_s']:.1f}", f"{r['total_s']:.1f}",
                    "ok" if r["total_s"] < 30 else "SLOW"] if "total_s" in r
                   else ["-", "-", "-", r.get("error") or r.get("skipped", "")])]
                for r in report["compile"]]
        out += ["", "flashtile first call, forward + backward with compilation (s; target < 30):",
                bench.table(["d", "dtype", "causal", "fwd", "bwd", "total", "< 30 s"], rows)]
    names = [m for m, info in report["methods"].items()
             if info["available"] and m in cfg["methods"]]
    if report["speed"] and names:
        groups: dict = {}
        for r in report["speed"]:
            key = (r["dtype"], r["head_dim"], r["seqlen"], r["causal"])
            groups.setdefault(key, {})[r["method"]] = r
        dtypes = list(cfg["dtypes"]) if "dtypes" in cfg else []
        order = lambda k: (dtypes.index(k[0]) if k[0] in dtypes else len(dtypes), k[0],  # noqa: E731
                           k[1], k[3], k[2])
        rows = []
        for (dt, d, s, causal), by in sorted(groups.items(), key=lambda kv: order(kv[0])):
            for p in cfg["passes"]:
                val = lambda m: by.get(m, {}).get(f"{p}_tflops")  # noqa: E731
                cells = [_num(val(m)) if val(m) else "skip" if "skipped" in by.get(m, {})
                         else "n/a" if m in by else "-" for m in names]
                ours = val("flashtile")
                others = [val(m) for m in names if m != "flashtile" and val(m)]
                ratio = lambda other: f"{ours / other:.2f}" if ours and other else "-"  # noqa: E731
                rows.append([dt, str(d), _seqlen(s), "yes" if causal else "no", p, *cells,
                             ratio(val("sdpa-flash") or val("sdpa")), ratio(val("sdpa-cudnn")),
                             ratio(max(others, default=None))])
        out += ["", "TFLOP/s (n/a: unsupported or failed, skip: time budget); "
                    "x = flashtile / that method:",
                bench.table(["dtype", "d", "seqlen", "causal", "pass", *names, "x flash",
                             "x cuDNN", "x best"], rows)]
    if report["memory"]:
        seqlens = sorted({r["seqlen"] for r in report["memory"]})
        by = {(r["method"], r["seqlen"]): r for r in report["memory"]}
        rows = []
        for m in dict.fromkeys(r["method"] for r in report["memory"]):
            cells = []
            for s in seqlens:
                r = by.get((m, s), {})
                cells.append(f"{r['extra_bytes'] / 2**20:.0f}" if "extra_bytes" in r
                             else "OOM" if r.get("oom") else "skip" if "skipped" in r
                             else "error" if r else "-")
            rows.append([m, *cells])
        floor = {r["seqlen"]: r["floor_bytes"] for r in report["memory"] if "floor_bytes" in r}
        if floor:
            rows.append(["(O, dQ, dK, dV, LSE)",
                         *[f"{floor[s] / 2**20:.0f}" if s in floor else "-" for s in seqlens]])
        r0 = report["memory"][0]
        out += ["", f"forward + backward peak memory above the inputs (MiB), batch 1, "
                    f"{r0['heads']} heads, d = {r0['head_dim']}, {r0['dtype']}, "
                    f"{_label(r0['causal'])}:",
                bench.table(["method", *map(_seqlen, seqlens)], rows)]
    missing = [m for m, info in report["methods"].items() if not info["available"]]
    timed = sum(any(k.endswith("_tflops") for k in r) for r in report["speed"])
    unsupported = sum("unsupported" in r for r in report["speed"])
    skipped = sum(r.get("skipped") == "time budget"
                  for r in report["speed"] + report["memory"] + report["compile"])
    out += ["", f"suite: {timed}/{len(report['speed'])} cases timed, {unsupported} unsupported, "
                f"{skipped} measurements skipped for time, {report.get('wall_s', 0):.0f} s"
                + (f"; not installed: {', '.join(missing)}" if missing else "")]
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry points


def _plot_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("flashtile_benchmarks_plot", HERE / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_folders(env: dict, out: str | None, results_dir: str | None) -> list[str]:
    """benchmarks/results/<GPU> (or --results-dir) and --out (default $OUT), deduplicated."""
    folders = [results_dir or str(results_folder(env)), out or os.environ.get("OUT") or None]
    return list(dict.fromkeys(os.path.abspath(f) for f in folders if f))


def run(cfg: SuiteConfig, out: str | None = None, results_dir: str | None = None,
        plot: bool = True) -> dict:
    """The suite end to end: measure, write JSON and table, draw the charts."""
    folders = output_folders(environment(cfg.device), out, results_dir)
    report = run_suite(cfg, folders)
    text = format_report(report)
    print(text, flush=True)
    for folder in folders:
        with open(os.path.join(folder, "suite.txt"), "w") as f:
            f.write(text + "\n")
    if plot:
        try:
            charts = _plot_module().main(os.path.join(folders[0], SUITE_FILE))
            for folder in folders[1:]:
                for chart in charts:
                    shutil.copy(chart, folder)
        except Exception as ex:  # matplotlib missing: the JSON is what matters
            print(f"charts not drawn: {bench.describe(ex)}", file=sys.stderr)
    print(f"results: {', '.join(folders)}", file=sys.stderr, flush=True)
    return report


def main(argv=None) -> int:
    """`python benchmarks/suite.py ARGS` = `python -m flashtile bench --suite ARGS`."""
    from flashtile.cli import main as cli_main

    return cli_main(["bench", "--suite", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
