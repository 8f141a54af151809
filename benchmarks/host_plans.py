"""Launch plans (flashtile/kernels/launcher.py `PlanCache`, `BoundLaunch`) on and off, in
one process on the GPU, rounds alternating the order: host time per call of tiny calls,
and the suite's 1k-token rows (16 x 1k tokens, model dim 2048, bf16, do_bench medians) at
head dims 64 / 128 / 256, causal and not, forward (inputs requiring grad, as the suite
times it) and backward, with torch SDPA's flash and cuDNN backends in the same process.

    python3 benchmarks/host_plans.py [--rounds 4] [--out DIR] [--host-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings

import torch

from flashtile.kernels import launcher
from host_launch import SDPA, flashtile_fn, host_us, suite_tflops, tiny_cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--host-only", action="store_true", help="skip the suite's 1k rows")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(torch.cuda.get_device_name(), flush=True)
    host, suite = {}, {}
    cases = tiny_cases()
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            launcher.USE_PLANS = on
            for name, call in cases:
                if name.startswith("sdpa") and not on:
                    continue
                label = name if name.startswith("sdpa") else f"{name} plans={'on' if on else 'off'}"
                host.setdefault(label, []).append(host_us(call))
    rows = [(d, causal, mode) for d in (64, 128, 256) for causal in (True, False)
            for mode in ("fwd", "bwd")]
    for r in range(0 if args.host_only else max(2, args.rounds // 2)):
        for d, causal, mode in rows:
            name = f"d{d} {'causal' if causal else 'full'} {mode}"
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                launcher.USE_PLANS = on
                suite.setdefault(f"{name} flashtile plans={'on' if on else 'off'}", []).append(
                    suite_tflops(flashtile_fn, d, mode, causal))
            launcher.USE_PLANS = True
            if r == 0:
                for peer, fn in SDPA.items():
                    suite.setdefault(f"{name} {peer}", []).append(
                        suite_tflops(fn, d, mode, causal))
    result = dict(gpu=torch.cuda.get_device_name(), host_us=host, suite_1k_tflops=suite)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "host_plans.json"), "w") as f:
            json.dump(result, f, indent=1)
    print(f"\nhost us per call (median of {args.rounds} rounds x 100 calls)")
    for label, xs in host.items():
        print(f"  {label:34s} {statistics.median(xs):7.1f}   [{min(xs):.1f}..{max(xs):.1f}]")
    print("suite shape, 16 x 1k tokens, TFLOP/s (median over rounds)")
    for label, xs in suite.items():
        print(f"  {label:40s} {statistics.median(xs):6.0f}   [{min(xs):.0f}..{max(xs):.0f}]")


if __name__ == "__main__":
    main()
