"""Host time of a forward + backward with flashtile's autograd Function skipping the
zero gradients of lse and probs (`ctx.set_materialize_grads(False)`, session 12) and with
torch's default (they are materialised: an allocation and a fill per output per
backward), alternating in one process on the GPU; torch SDPA's flash backend alongside.

    python3 benchmarks/materialize_probe.py [--rounds 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from host_launch import host_rounds, report, tiny_cases

_SKIP = torch.autograd.function.FunctionCtx.set_materialize_grads


def _skip_zero_grads(on: bool) -> None:
    """on: flashtile as shipped; off: its set_materialize_grads(False) made a no-op."""
    torch.autograd.function.FunctionCtx.set_materialize_grads = (
        _SKIP if on else lambda ctx, value: None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(torch.cuda.get_device_name(), flush=True)
    cases = [c for c in tiny_cases() if "bwd" in c[0]]
    host = host_rounds(cases, args.rounds, _skip_zero_grads, "skip_zero_grads")
    report(args.out, "materialize_probe.json", args.rounds, host, "suite_1k_tflops", {}, "")


if __name__ == "__main__":
    main()
