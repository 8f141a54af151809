"""Charts from the benchmark JSON, in the style of flash-attn's README.

    python benchmarks/plot.py benchmarks/results/NVIDIA_H200/suite.json [--out-dir DIR]
    python benchmarks/plot.py benchmarks/results/NVIDIA_H200/gpu_report.json

From a suite.json (benchmarks/suite.py), next to it unless --out-dir:

* ``suite_speed_<pass>_d<head dim>_<dtype>.png``: TFLOP/s, one group of bars per
  sequence length, one bar per method; panels non-causal | causal;
* ``suite_speedup_<dtype>.png``: each method's speed over torch SDPA's flash
  backend (FlashAttention-2), one row per pass, panels non-causal | causal;
* ``suite_memory.png``: forward + backward peak memory above the inputs against
  sequence length (log axes), one line per method.

From a gpu_report.json (benchmarks/gpu_report.py): ``speed_fwd.png`` and
``speed_bwd.png``, one panel per (head dim, causal).
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"flashtile": "#d62728", "sdpa-flash": "#1f77b4", "sdpa": "#1f77b4",
          "sdpa-cudnn": "#2ca02c", "sdpa-efficient": "#7f7f7f", "sdpa-math": "#8c564b",
          "flash-attn-2": "#ff7f0e", "flash-attn-3": "#9467bd", "flash-attn-4": "#e377c2",
          "flex": "#17becf"}
LEGACY_METHODS = ["flashtile", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient"]
PASS_NAMES = {"fwd": "Forward", "bwd": "Backward", "fwd_bwd": "Forward + backward"}


def _seqlen(s: int) -> str:
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def _color(method: str, i: int) -> str:
    return COLORS.get(method, f"C{i % 10}")


def _bars(ax, methods, groups, value, labels=None, fmt="%.0f", fontsize=6):
    """Grouped bars: one group per entry of `groups`, one bar per method; value(m, g)
    is a number or None (no bar: unsupported or not measured)."""
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs, vals = [], []
        for j, g in enumerate(groups):
            v = value(m, g)
            if v:
                xs.append(j + (i - len(methods) / 2 + 0.5) * width)
                vals.append(v)
        bars = ax.bar(xs, vals, width, label=(labels or {}).get(m, m), color=_color(m, i))
        ax.bar_label(bars, fmt=fmt, fontsize=fontsize, padding=1)
    ax.set_xlim(-0.5, len(groups) - 0.5)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _versions(report: dict) -> str:
    env = report.get("environment", report)
    return f"torch {env.get('torch')}, triton {env.get('triton')}"


# ----------------------------------------------------------------------------- gpu_report.json


def plot_pass(report: dict, which: str, path: str) -> str:
    """gpu_report.json: one panel per (head dim, causal), bf16."""
    rows = [r for r in report["speed"] if f"{which}_tflops" in r]
    panels = sorted({(r["head_dim"], r["causal"]) for r in rows})
    lookup = {(r["method"], r["head_dim"], r["seqlen"], r["causal"]): r[f"{which}_tflops"]
              for r in rows}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True,
                             squeeze=False)
    for ax, (d, causal) in zip(axes[0], panels):
        seqlens = sorted({r["seqlen"] for r in rows if r["head_dim"] == d})
        _bars(ax, LEGACY_METHODS, seqlens, lambda m, s: lookup.get((m, d, s, causal)))
        ax.set_xticks(range(len(seqlens)), [_seqlen(s) for s in seqlens])
        ax.set_title(f"head dim {d}, {'causal' if causal else 'non-causal'}", fontsize=9)
        ax.set_xlabel("sequence length (batch × seqlen = 16k)")
    axes[0][0].set_ylabel("TFLOP/s")
    axes[0][0].set_ylim(top=axes[0][0].get_ylim()[1] * 1.25)
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"{PASS_NAMES[which]} pass, bf16, {report['gpu']} ({_versions(report)})",
                 fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- suite.json


def _labels(report: dict) -> dict:
    return {m: info.get("label", m) for m, info in report.get("methods", {}).items()}


def _methods_with(report: dict, rows, key: str) -> list[str]:
    """Methods in the report's order that have `key` in one of `rows`."""
    have = {r["method"] for r in rows if r.get(key)}
    return [m for m in report["methods"] if m in have]


def plot_speed(report: dict, which: str, head_dim: int, dtype: str, path: str) -> str:
    """TFLOP/s bars per seqlen for one pass, head dim and dtype; panels non-causal | causal."""
    rows = [r for r in report["speed"] if r["head_dim"] == head_dim and r["dtype"] == dtype]
    key = f"{which}_tflops"
    methods = _methods_with(report, rows, key)
    causals = sorted({r["causal"] for r in rows})
    seqlens = sorted({r["seqlen"] for r in rows})
    lookup = {(r["method"], r["seqlen"], r["causal"]): r.get(key) for r in rows}
    width = max(4.5, 1.2 + len(seqlens) * (0.35 + 0.16 * len(methods)))
    fig, axes = plt.subplots(1, len(causals), figsize=(width * len(causals), 4.0), sharey=True,
                             squeeze=False)
    labels = _labels(report)
    for ax, causal in zip(axes[0], causals):
        _bars(ax, methods, seqlens, lambda m, s: lookup.get((m, s, causal)), labels)
        ax.set_xticks(range(len(seqlens)), [_seqlen(s) for s in seqlens])
        ax.set_title("causal" if causal else "non-causal", fontsize=9)
        ax.set_xlabel(f"sequence length (batch × seqlen = {report['config']['tokens']})")
    axes[0][0].set_ylabel("speed (TFLOP/s)")
    axes[0][0].set_ylim(top=axes[0][0].get_ylim()[1] * 1.3)
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"{PASS_NAMES[which]} pass, head dim {head_dim}, {dtype}, "
                 f"{report['environment']['gpu']} ({_versions(report)})", fontsize=10)
    return _save(fig, path)


def plot_speedup(report: dict, dtype: str, path: str) -> str | None:
    """Each method's TFLOP/s over torch SDPA's flash backend (or plain SDPA on CPU)."""
    rows = [r for r in report["speed"] if r["dtype"] == dtype]
    base = next((b for b in ("sdpa-flash", "sdpa") if any(r["method"] == b for r in rows)), None)
    passes = [p for p in report["config"]["passes"] if any(r.get(f"{p}_tflops") for r in rows)]
    if base is None or not passes:
        return None
    causals = sorted({r["causal"] for r in rows})
    groups = sorted({(r["head_dim"], r["seqlen"]) for r in rows
                     if any(r.get(f"{p}_tflops") for p in passes)})
    lookup = {(r["method"], r["head_dim"], r["seqlen"], r["causal"]): r for r in rows}
    methods = [m for m in _methods_with(report, rows, f"{passes[0]}_tflops") if m != base]
    labels = _labels(report)
    width = max(5.0, 1.2 + len(groups) * (0.3 + 0.14 * len(methods)))
    fig, axes = plt.subplots(len(passes), len(causals), figsize=(width * len(causals),
                             2.9 * len(passes) + 0.6), sharey=True, squeeze=False)
    for row_axes, p in zip(axes, passes):
        for ax, causal in zip(row_axes, causals):
            def ratio(m, g, p=p, causal=causal):
                ours = lookup.get((m, *g, causal), {}).get(f"{p}_tflops")
                ref = lookup.get((base, *g, causal), {}).get(f"{p}_tflops")
                return ours / ref if ours and ref else None

            _bars(ax, methods, groups, ratio, labels, fmt="%.2f", fontsize=5)
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_xticks(range(len(groups)), [f"d{d}\n{_seqlen(s)}" for d, s in groups],
                          fontsize=7)
            ax.set_title(f"{PASS_NAMES[p]}, {'causal' if causal else 'non-causal'}", fontsize=9)
        row_axes[0].set_ylabel(f"speed-up over {base}")
    fig.suptitle(f"Speed-up over {labels.get(base, base)}, {dtype}, "
                 f"{report['environment']['gpu']} ({_versions(report)})", fontsize=10)
    axes[0][0].set_ylim(top=axes[0][0].get_ylim()[1] * 1.1)
    handles, names = axes[0][0].get_legend_handles_labels()
    top = 1 - 0.4 / fig.get_figheight()
    fig.legend(handles, names, loc="upper center", ncol=len(names), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, top))
    fig.tight_layout(rect=(0, 0, 1, top - 0.25 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(report: dict, path: str) -> str | None:
    """Forward + backward peak memory above the inputs against seqlen, one line per method."""
    rows = report.get("memory", [])
    measured = [r for r in rows if "extra_bytes" in r]
    if not measured:
        return None
    labels = _labels(report)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = [m for m in report["methods"] if any(r["method"] == m for r in measured)]
    for i, m in enumerate(methods):
        points = sorted((r["seqlen"], r["extra_bytes"] / 2**30) for r in measured
                        if r["method"] == m)
        oom = sorted(r["seqlen"] for r in rows if r["method"] == m and r.get("oom"))
        label = labels.get(m, m) + (f" (out of memory at {_seqlen(oom[0])})" if oom else "")
        ax.plot(*zip(*points), marker="o", markersize=4, label=label, color=_color(m, i),
                linewidth=2.2 if m == "flashtile" else 1.4)
    floor = sorted({(r["seqlen"], r["floor_bytes"] / 2**30) for r in measured})
    ax.plot(*zip(*floor), linestyle="--", color="black", linewidth=0.9,
            label="O, dQ, dK, dV, LSE themselves")
    seqlens = sorted({r["seqlen"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(seqlens, [_seqlen(s) for s in seqlens])
    ax.minorticks_off()
    ax.set_xlabel("sequence length")
    ax.set_ylabel("peak memory above Q, K, V, dO (GiB)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    r0 = measured[0]
    ax.set_title(f"Forward + backward memory, batch 1, {r0['heads']} heads, d = {r0['head_dim']},"
                 f" {r0['dtype']}\n{report['environment']['gpu']} ({_versions(report)})",
                 fontsize=9)
    return _save(fig, path)


def plot_suite(report: dict, folder: str) -> list[str]:
    charts = []
    speed = [r for r in report["speed"] if "skipped" not in r]
    for dtype in dict.fromkeys(r["dtype"] for r in speed):
        for d in sorted({r["head_dim"] for r in speed if r["dtype"] == dtype}):
            rows = [r for r in speed if r["dtype"] == dtype and r["head_dim"] == d]
            for p in report["config"]["passes"]:
                if any(r.get(f"{p}_tflops") for r in rows):
                    charts.append(plot_speed(report, p, d, dtype,
                                             os.path.join(folder, f"suite_speed_{p}_d{d}_{dtype}.png")))
        charts.append(plot_speedup(report, dtype, os.path.join(folder, f"suite_speedup_{dtype}.png")))
    charts.append(plot_memory(report, os.path.join(folder, "suite_memory.png")))
    return [c for c in charts if c]


def plot_decode(report: dict, path: str) -> str:
    """Decode (Sq = 1) K/V read bandwidth against cache length, one panel per batch."""
    rows = [r for r in report["rows"] if "gbs" in r]
    batches = sorted({r["batch"] for r in rows})
    methods = ["flashtile contiguous", "flashtile page16", "flashtile page256", "sdpa", "flex"]
    palette = ["#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#17becf"]
    fig, axes = plt.subplots(1, len(batches), figsize=(3.4 * len(batches), 3.4), sharey=True)
    for ax, b in zip(axes, batches):
        for i, m in enumerate(methods):
            pts = sorted((r["cache_len"], r["gbs"]) for r in rows
                         if r["method"] == m and r["batch"] == b)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m, color=palette[i])
        ax.axhline(report["copy_gbs"], color="k", ls="--", lw=1, label="device copy")
        ax.set_xscale("log", base=2)
        ax.set_title(f"batch {b}", fontsize=9)
        ax.set_xlabel("cache length")
    axes[0].set_ylabel("K/V read GB/s")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"Decode, Sq = 1, {report['heads']} query / {report['kv_heads']} KV heads, "
                 f"d = {report['head_dim']}, {report['dtype']}, {report['gpu']}", fontsize=10)
    return _save(fig, path)


def plot_fp8(report: dict, path: str) -> str:
    """fp8_bench.json: FP8 and bf16 forward TFLOP/s per seqlen, one panel per (d, causal)."""
    rows = report["results"]
    panels = sorted({(r["d"], r["causal"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), sharey=True)
    for ax, (d, causal) in zip(axes, panels):
        mine = {r["seqlen"]: r for r in rows if r["d"] == d and r["causal"] == causal}
        groups = sorted(mine)
        _bars(ax, ["bf16", "fp8"], groups, lambda m, g: mine[g][f"{m}_tflops"],
              labels={"bf16": "flashtile bf16", "fp8": "flashtile fp8 (e4m3)"})
        ax.set_xticks(range(len(groups)), [_seqlen(g) for g in groups])
        ax.set_title(f"d = {d}, {'causal' if causal else 'non-causal'}", fontsize=9)
        ax.set_xlabel("seqlen")
    axes[0].set_ylabel("forward TFLOP/s")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"FP8 vs bf16 forward, 16k tokens, model dim 2048, {report['gpu']}",
                 fontsize=10)
    return _save(fig, path)


def main(path: str, out_dir: str | None = None) -> list[str]:
    """Charts of the JSON at `path` into `out_dir` (default: next to it); their paths."""
    with open(path) as f:
        report = json.load(f)
    folder = out_dir or os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if report.get("kind") == "flashtile-bench-suite":
        charts = plot_suite(report, folder)
    elif os.path.basename(path).startswith("fp8_bench"):  # benchmarks/fp8_bench.py
        charts = [plot_fp8(report, os.path.join(folder, "fp8_speed.png"))]
    elif "copy_gbs" in report:  # benchmarks/decode_bench.py
        charts = [plot_decode(report, os.path.join(folder, "decode.png"))]
    else:
        charts = [plot_pass(report, which, os.path.join(folder, f"speed_{which}.png"))
                  for which in ("fwd", "bwd")]
    for chart in charts:
        print(chart)
    return charts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="a suite.json or gpu_report.json")
    parser.add_argument("--out-dir", help="default: the JSON's folder")
    args = parser.parse_args()
    main(args.json, args.out_dir)
