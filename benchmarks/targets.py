"""Issue #4's speed targets checked against a suite report (benchmarks/suite.py, or the
median of several runs from suite_median.py): one row per target with the worst case,
whether it is met, and every case that misses it.

    python3 benchmarks/targets.py benchmarks/results/NVIDIA_H200/suite.json

Ratios are flashtile's TFLOP/s over the peer's in the same report (same process, same
run). The quick suite times 1k, 4k and 16k tokens, so "S >= 2k" reads its 4k and 16k rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NamedTuple


class Target(NamedTuple):
    name: str
    pass_name: str  # "fwd" or "bwd"
    head_dims: tuple
    min_seqlen: int
    peer: str
    ratio: float


TARGETS = (
    Target("forward >= 1.0x cuDNN, d64 / d128, S >= 2k", "fwd", (64, 128), 2048,
           "sdpa-cudnn", 1.0),
    Target("forward >= 1.5x torch flash, d64 / d128, S >= 1k", "fwd", (64, 128), 1024,
           "sdpa-flash", 1.5),
    Target("backward >= 1.0x cuDNN, d64 / d128, S >= 2k", "bwd", (64, 128), 2048,
           "sdpa-cudnn", 1.0),
    Target("d256 forward >= 1.3x torch flash", "fwd", (256,), 0, "sdpa-flash", 1.3),
    Target("d256 backward >= 1.3x torch flash", "bwd", (256,), 0, "sdpa-flash", 1.3),
)
COMPILE_LIMIT_S = 30.0


def _label(row: dict) -> str:
    causal = "causal" if row["causal"] else "non-causal"
    return f"{row['dtype']} d{row['head_dim']} {row['seqlen'] // 1024}k {causal}"


def check(report: dict, targets=TARGETS) -> list[dict]:
    """Per target: the ratio of every case it covers, the worst, met or not, the misses."""
    speed = {(r["method"], r["dtype"], r["head_dim"], r["seqlen"], r["causal"]): r
             for r in report["speed"]}
    results = []
    for t in targets:
        key = f"{t.pass_name}_tflops"
        ratios = {}
        for (method, dtype, d, seqlen, causal), row in speed.items():
            peer = speed.get((t.peer, dtype, d, seqlen, causal))
            if (method != "flashtile" or d not in t.head_dims or seqlen < t.min_seqlen
                    or peer is None or not row.get(key) or not peer.get(key)):
                continue
            ratios[_label(row)] = row[key] / peer[key]
        if not ratios:
            results.append(dict(target=t.name, cases=0, worst=None, met=None, misses=[]))
            continue
        worst = min(ratios, key=ratios.get)
        misses = sorted(((k, v) for k, v in ratios.items() if v < t.ratio),
                        key=lambda kv: kv[1])  # worst first
        results.append(dict(target=t.name, cases=len(ratios), worst=(worst, ratios[worst]),
                            met=not misses, misses=misses))
    compiles = [c for c in report.get("compile", []) if c.get("method") == "flashtile"]
    if compiles:
        slowest = max(compiles, key=lambda c: c["total_s"])
        misses = sorted(((_label(c), c["total_s"]) for c in compiles
                         if c["total_s"] >= COMPILE_LIMIT_S), key=lambda kv: -kv[1])
        results.append(dict(
            target=f"first call (fwd + bwd, compile included) < {COMPILE_LIMIT_S:.0f} s",
            cases=len(compiles), worst=(_label(slowest), slowest["total_s"]),
            met=not misses, misses=misses))
    return results


def format_table(results: list[dict]) -> str:
    lines = ["| target | cases | worst | met | misses |", "|---|---|---|---|---|"]
    for r in results:
        worst = "-" if r["worst"] is None else f"{r['worst'][1]:.2f} ({r['worst'][0]})"
        met = {True: "yes", False: "**no**", None: "no data"}[r["met"]]
        misses = "; ".join(f"{k} {v:.2f}" for k, v in r["misses"]) or "-"
        lines.append(f"| {r['target']} | {r['cases']} | {worst} | {met} | {misses} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="a suite.json")
    args = ap.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    env = report.get("environment", {})
    runs = report.get("runs", 1)
    print(f"{env.get('gpu', '?')}: {args.report} (median of {runs} run(s))\n")
    print(format_table(check(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
