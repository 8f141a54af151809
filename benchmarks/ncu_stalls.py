"""Warp-stall samples of one Nsight Compute report, per reason and per SASS opcode, for
the warps that do the work: the idle padding warps of a warp-specialised kernel (parked
on a NOP after their barrier) and the loader's mbarrier spin are left out.

    ncu ... --set full -o rep python3 benchmarks/one_forward.py --kernel gluon --fp8
    ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
    python3 benchmarks/ncu_stalls.py sass.csv
"""

from __future__ import annotations

import collections
import csv
import sys


def _num(x: str) -> float:
    try:
        return float(x)
    except ValueError:
        return 0.0


def main(path: str, top: int = 10) -> None:
    rows = list(csv.reader(open(path)))
    hdr = rows[1]
    data = [r for r in rows[2:] if len(r) == len(hdr)]
    src, samples = hdr.index("Source"), hdr.index("Warp Stall Sampling (All Samples)")
    reasons = [i for i, h in enumerate(hdr) if h.startswith("stall_") and "Not Issued" not in h]

    def idle(r):  # padding warps' NOP and loader spin loops (thousands of samples each)
        return (_num(r[samples]) > 2000 and ("NOP" in r[src] or "BRA" in r[src])
                or "TRYWAIT" in r[src])

    work = [r for r in data if not idle(r)]
    total = sum(_num(r[samples]) for r in work)
    by_reason = collections.Counter()
    by_op = collections.Counter()
    op_reasons = collections.defaultdict(collections.Counter)
    for r in work:
        words = r[src].split()
        op = (words[1] if words[0].startswith("@") else words[0]).split(".")[0]
        by_op[op] += _num(r[samples])
        for i in reasons:
            by_reason[hdr[i][6:]] += _num(r[i])
            op_reasons[op][hdr[i][6:]] += _num(r[i])
    print(f"{total:.0f} samples on working warps")
    print("  ".join(f"{k} {v / total:.1%}" for k, v in by_reason.most_common(top)))
    for op, v in by_op.most_common(top):
        detail = ", ".join(f"{k} {x / total:.1%}" for k, x in op_reasons[op].most_common(3))
        print(f"{op:10s} {v / total:6.1%}  {detail}")


if __name__ == "__main__":
    main(sys.argv[1])
