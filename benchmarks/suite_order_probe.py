"""Why the suite's d64 1k causal forward (288 TFLOP/s in three session-11 runs) sits below
grad_probe.py's (321, same code, same shape, same do_bench): the suite's own `time_case`
alone, right after the 16k non-causal case (the suite's order), and grad_probe's timing,
interleaved in one process. Prints TFLOP/s per variant and round.

    python3 benchmarks/suite_order_probe.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from flashtile import bench
from grad_probe import tflops
from host_launch import flashtile_fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    method = bench.make_method("flashtile")
    res = {}
    for _ in range(args.rounds):
        for d in (64, 128):
            res.setdefault(f"d{d} time_case alone", []).append(bench.time_case(
                method, d, 1024, True, torch.bfloat16, passes=("fwd",))["fwd_tflops"])
            bench.time_case(method, d, 16384, False, torch.bfloat16, passes=("fwd",))
            res.setdefault(f"d{d} time_case after 16k", []).append(bench.time_case(
                method, d, 1024, True, torch.bfloat16, passes=("fwd",))["fwd_tflops"])
            res.setdefault(f"d{d} grad_probe", []).append(tflops(flashtile_fn, d, True))
            res.setdefault(f"d{d} time_case, grad_probe inputs", []).append(
                bench.time_case(method, d, 1024, True, torch.bfloat16, passes=("fwd",),
                                seed=-1024 * 1000 - d)["fwd_tflops"])
    for label, xs in res.items():
        print(f"  {label:44s} {statistics.median(xs):6.0f}   {[round(x) for x in xs]}")


if __name__ == "__main__":
    main()
