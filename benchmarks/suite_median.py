"""Combine several runs of the benchmark suite (same configuration, same GPU) into one
report whose times are, per case and method, the median over the runs: one do_bench per
case and run leaves single-case outliers on the H200 hosts (a 1k row at 2/3 of its
usual speed in one run of three, NOTES.md session 11), and the median of three drops
them for every method alike. The spread (min and max TFLOP/s over the runs) is kept in
each row as `fwd_tflops_runs` / `bwd_tflops_runs`.

    python3 benchmarks/suite_median.py RUN1/suite.json RUN2/suite.json ... --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402


def _case(row: dict) -> tuple:
    return (row["method"], row["dtype"], row["head_dim"], row["seqlen"], row["causal"])


def combine(reports: list[dict]) -> dict:
    """The first report with each speed row's times replaced by the median over all."""
    combined = json.loads(json.dumps(reports[0]))  # (a copy: the runs stay as measured)
    rows: dict = {}
    for report in reports:
        for r in report["speed"]:
            rows.setdefault(_case(r), []).append(r)
    for row in combined["speed"]:
        runs = rows[_case(row)]
        for p in ("fwd", "bwd"):
            ms = [r[f"{p}_ms"] for r in runs if r.get(f"{p}_ms")]
            if len(ms) < len(runs) or not ms:
                continue  # a pass some run did not measure keeps the first run's entry
            flops_ms = row[f"{p}_tflops"] * row[f"{p}_ms"]  # TFLOP/s x ms = flops / 1e9
            row[f"{p}_ms"] = statistics.median(ms)
            row[f"{p}_tflops"] = flops_ms / row[f"{p}_ms"]
            row[f"{p}_tflops_runs"] = [r[f"{p}_tflops"] for r in runs]
    combined["runs"] = len(reports)
    return combined


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    reports = []
    for path in args.reports:
        with open(path) as f:
            reports.append(json.load(f))
    combined = combine(reports)
    suite.write_json(combined, [args.out])
    text = suite.format_report(combined)
    text += f"\n(per case: median of {len(reports)} runs of the suite)"
    with open(os.path.join(args.out, "suite.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
