"""Launch plans (flashtile/kernels/launcher.py `PlanCache`, `BoundLaunch`) on and off, in
one process on the GPU, rounds alternating the order: host time per call of tiny calls,
and the suite's 1k-token rows (16 x 1k tokens, model dim 2048, bf16, do_bench medians) at
head dims 64 / 128 / 256, causal and not, forward (inputs requiring grad, as the suite
times it) and backward, with torch SDPA's flash and cuDNN backends in the same process.
--switch tensor_maps: the same with launcher.USE_TENSOR_MAPS (TMA descriptors encoded
once per address and shape) on and off instead.

    python3 benchmarks/host_plans.py [--rounds 4] [--out DIR] [--host-only]
        [--switch plans|tensor_maps]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from flashtile.kernels import launcher
from host_launch import SDPA, flashtile_fn, host_rounds, report, suite_tflops, tiny_cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--host-only", action="store_true", help="skip the suite's 1k rows")
    ap.add_argument("--switch", default="plans", choices=list(SWITCHES))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(torch.cuda.get_device_name(), flush=True)
    name, attr = args.switch, SWITCHES[args.switch]

    def switch(on: bool) -> None:
        setattr(launcher, attr, on)

    host = host_rounds(tiny_cases(), args.rounds, switch, name)
    suite = {}
    rows = [(d, causal, mode) for d in (64, 128, 256) for causal in (True, False)
            for mode in ("fwd", "bwd")]
    for r in range(0 if args.host_only else max(2, args.rounds // 2)):
        for d, causal, mode in rows:
            row = f"d{d} {'causal' if causal else 'full'} {mode}"
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                switch(on)
                suite.setdefault(f"{row} flashtile {name}={'on' if on else 'off'}", []).append(
                    suite_tflops(flashtile_fn, d, mode, causal))
            switch(True)
            if r == 0:
                for peer, fn in SDPA.items():
                    suite.setdefault(f"{row} {peer}", []).append(
                        suite_tflops(fn, d, mode, causal))
    report(args.out, f"host_{name}.json", args.rounds, host, "suite_1k_tflops", suite,
           "suite shape, 16 x 1k tokens, TFLOP/s (median over rounds)")


SWITCHES = {"plans": "USE_PLANS", "tensor_maps": "USE_TENSOR_MAPS"}


if __name__ == "__main__":
    main()
