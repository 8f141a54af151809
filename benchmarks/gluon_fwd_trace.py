"""A timeline of the Gluon forward's consumer warpgroups: an edited copy of
forward_hopper.py reads the SM clock (%clock64) at five points of every key-tile
iteration of the first CTA (query block 0 of batch 0, head 0) and stores them; printed
as per-phase cycles and as how much the two warpgroups' softmax phases overlap.

    python3 benchmarks/gluon_fwd_trace.py --out "$OUT" [--fp8] [--seqlen 8192] [--module F]

Points per iteration j (program order; the clock read can drift a few instructions):
  t0 loop top, ta after the K/V "full" wait and the wgmma issue, t1 S_j ready,
  t2 softmax_j done (read after l_i exists), t3 P.V_{j-1} done.
Non-causal, d128, 16k tokens, model dim 2048. Writes gluon_fwd_trace_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

import torch

from flashtile import bench
from flashtile.kernels import forward, forward_hopper
from gluon_ab import call_flashtile  # (this script's folder is on sys.path when it runs)
from module_copies import load_copy

STAMPS = 5
MAX_J = 256

CLOCK = '''

@gluon.jit
def _clock(dep):
    """%clock64 (this SM's cycle counter), read after dep exists."""
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l,r", [dep], dtype=gl.int64,
                                     is_pure=False, pack=1)


@gluon.jit
def _stamp(Trace, wg, j, k, t, on):
    gl.store(Trace + ((wg * MAX_J + j) * STAMPS + k), t, mask=on & (j < MAX_J))


@gluon.jit
def _consumer('''

_STAMP = "            _stamp(Trace, wg, j, {}, _clock(j), on)\n"
_S_WAIT = "            s = warpgroup_mma_wait(1, deps=[s])  # S_j is ready; P.V may still run\n"
_PV_WAIT = "            acc = _wait_pv(acc, pv, IS_FP8)\n"
# (regex, replacement) on forward_hopper.py's source, each matching exactly once; anchors
# chosen to fit this kernel's variants too (e.g. bdd6243's ping-pong version)
EDITS = [
    (r"@gluon.jit\ndef _consumer\(", CLOCK[2:].replace("\\", "\\\\")),
    (r"\):\n(    \"\"\"One warpgroup: 64 query rows)", r", Trace):\n\1"),
    (r"(        for j in range\(1, n_tiles\):\n)",
     "        on = (m0 == 0) & (b == 0) & (h == 0)\n\\1" + _STAMP.format(0)),
    (re.escape(_S_WAIT), _STAMP.format(1) + _S_WAIT + _STAMP.format(2)),
    (re.escape(_PV_WAIT),
     "            gl.store(Trace + ((wg * MAX_J + j) * STAMPS + 3) + rows * 0, _clock(l_i),\n"
     "                     mask=on & (j < MAX_J) & (rows == r0))\n" + _PV_WAIT
     + _STAMP.format(4)),
    (r"(stride_lb, stride_lh(, gl.to_tensor\(PINGPONG\))?)\)\n    gl.warp_specialize",
     r"\1, Trace)\n    gl.warp_specialize"),
    (r"seqlen_q, seqlen_k, qk_scale,\n                HEAD_DIM",
     "seqlen_q, seqlen_k, qk_scale, Trace,\n                HEAD_DIM"),
    (r"        seqlen_q, seqlen_k, softmax_scale \* LOG2E,\n",
     "        seqlen_q, seqlen_k, softmax_scale * LOG2E, TRACE,\n"),
]


def _edit(src: str) -> str:
    for pattern, repl in EDITS:
        src, n = re.subn(pattern, repl, src)
        assert n == 1, (pattern, n)
    return src.replace("ROWS = 64  # query rows", f"STAMPS = gl.constexpr({STAMPS})\n"
                       f"MAX_J = gl.constexpr({MAX_J})\nTRACE = None\nROWS = 64  # query rows")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument("--module", default=forward_hopper.__file__,
                    help="another version of forward_hopper.py to trace")
    ap.add_argument("--tag", default="", help="suffix of the JSON's name")
    ap.add_argument("--pp", action="store_true", help="the module's ping-pong on (PINGPONG)")
    args = ap.parse_args()
    mod = load_copy(args.module, "fwd_hopper_trace", tempfile.mkdtemp(), _edit)
    mod.TRACE = torch.zeros(2 * MAX_J * STAMPS, dtype=torch.int64, device="cuda")
    mod.ENABLED, mod.MIN_FLOPS = set(mod.CONFIGS), 0.0
    if args.pp:
        mod.PINGPONG = set(mod.CONFIGS)
    forward.USE_HOPPER_KERNEL, forward.forward_hopper = True, mod
    s, d = args.seqlen, 128
    q, k, v = bench.make_inputs(16384 // s, s, 2048 // d, d, torch.bfloat16, "cuda")[0][:3]
    q, k, v = (x.detach() for x in (q, k, v))
    if args.fp8:
        q, k, v = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
    with torch.no_grad():
        for _ in range(3):
            call_flashtile(q, k, v, False, args.fp8)
    torch.cuda.synchronize()
    forward.forward_hopper = forward_hopper
    t = mod.TRACE.view(2, MAX_J, STAMPS).cpu().double()
    n = min(MAX_J, s // 128) - 1
    t = t[:, 1:n + 1]  # iterations 1 .. n
    base = t[:, :, 0].min().item()
    rows = []
    for j in range(n // 4, n // 4 + 8):
        for wg in (0, 1):
            t0, ta, t1, t2, t4 = (t[wg, j, i].item() for i in range(STAMPS))
            nxt = t[wg, j + 1, 0].item()
            rows.append(dict(j=j + 1, wg=wg, start=t0 - base, issue=ta - t0, s_wait=t1 - ta,
                             softmax=t2 - t1, pv_wait=t4 - t2, rest=nxt - t4))
    mid = slice(n // 4, 3 * n // 4)
    soft = [(t[w, mid, 2], t[w, mid, 3]) for w in (0, 1)]
    overlap = 0.0
    for a0, a1 in zip(*soft[0]):
        for b0, b1 in zip(*soft[1]):
            overlap += max(0.0, min(a1, b1) - max(a0, b0))
    total = float((soft[0][1] - soft[0][0]).sum())
    overlap = float(overlap)
    per_iter = float((t[0, 3 * n // 4, 0] - t[0, n // 4, 0]) / (n // 2))
    name = "fp8" if args.fp8 else "bf16"
    print(f"{torch.cuda.get_device_name()}, d128, S={s}, {name}, CTA 0; cycles")
    print(bench.table(["j", "wg", "start", "issue", "S wait", "softmax", "P.V wait", "rest"],
                      [[str(r["j"]), str(r["wg"])] + [f"{r[k]:.0f}" for k in
                       ("start", "issue", "s_wait", "softmax", "pv_wait", "rest")]
                       for r in rows]))
    phases = {k: float(sum(r[k] for r in rows) / len(rows))
              for k in ("issue", "s_wait", "softmax", "pv_wait", "rest")}
    print(f"mean per iteration: {phases}; cycles per iteration {per_iter:.0f}; "
          f"softmax overlap between the warpgroups {overlap / total:.0%} of warpgroup 0's")
    with open(os.path.join(args.out, f"gluon_fwd_trace_{name}{args.tag}.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), seqlen=s, rows=rows, mean=phases,
                       cycles_per_iteration=per_iter, softmax_overlap=overlap / total), f,
                  indent=1)


if __name__ == "__main__":
    main()
