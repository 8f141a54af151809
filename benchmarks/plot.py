"""Charts from a gpu_report.json: grouped TFLOP/s bars per sequence length.

    python benchmarks/plot.py benchmarks/results/NVIDIA_H200/gpu_report.json

Writes speed_fwd.png and speed_bwd.png next to the JSON, in the style of
flash-attn's README: one panel per (head dim, causal), one bar per method.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["flashtile", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient"]
COLORS = {"flashtile": "#d62728", "sdpa-flash": "#1f77b4", "sdpa-cudnn": "#2ca02c",
          "sdpa-efficient": "#7f7f7f"}


def plot_pass(report: dict, which: str, path: str) -> None:
    rows = [r for r in report["speed"] if f"{which}_tflops" in r]
    panels = sorted({(r["head_dim"], r["causal"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True)
    for ax, (d, causal) in zip(axes, panels):
        seqlens = sorted({r["seqlen"] for r in rows if r["head_dim"] == d})
        width = 0.8 / len(METHODS)
        for i, m in enumerate(METHODS):
            vals = [next((r[f"{which}_tflops"] for r in rows if (r["method"], r["head_dim"],
                         r["seqlen"], r["causal"]) == (m, d, s, causal)), 0) for s in seqlens]
            xs = [j + (i - len(METHODS) / 2 + 0.5) * width for j in range(len(seqlens))]
            bars = ax.bar(xs, vals, width, label=m, color=COLORS[m])
            ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
        ax.set_xticks(range(len(seqlens)), [f"{s // 1024}k" for s in seqlens])
        ax.set_title(f"head dim {d}, {'causal' if causal else 'non-causal'}", fontsize=9)
        ax.set_xlabel("sequence length (batch × seqlen = 16k)")
    axes[0].set_ylabel("TFLOP/s")
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 1.25)
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"{'Forward' if which == 'fwd' else 'Backward'} pass, bf16, {report['gpu']} "
                 f"(torch {report['torch']}, triton {report['triton']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(path: str) -> None:
    with open(path) as f:
        report = json.load(f)
    folder = os.path.dirname(path)
    for which in ("fwd", "bwd"):
        plot_pass(report, which, os.path.join(folder, f"speed_{which}.png"))
        print(os.path.join(folder, f"speed_{which}.png"))


if __name__ == "__main__":
    main(sys.argv[1])
