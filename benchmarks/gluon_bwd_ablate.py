"""Where the Gluon backward's time goes: time source-edited copies of backward_hopper.py
that drop one piece of work each, next to the real kernel, in one process.

    python3 benchmarks/gluon_bwd_ablate.py --out "$OUT" [--seqlen 8192] [--variants ...]
        [--modules name=path/to/backward_hopper_copy.py ...]

Variants (their gradients are WRONG on purpose; only the timing means something):
  real        the kernel as committed
  no_atomic   (atomic-add versions only) dQ computed but not added
  no_reduce   (copy-engine versions) dQ staged in shared memory but not reduce-added
  no_dq       no dS staging, no warpgroup barrier, no dQ matmul, no dQ adds
  stages3     three ring slots instead of two (correct gradients)
With --head-dim 256 the copies are of backward_hopper_d256.py, with these variants:
  real, no_reduce   as above
  dq_first          the two dQ chunks' wgmmas issued before dV / dK (their reduce-adds
                    overlap dV / dK on the tensor cores; dO / Q slots released last)
  dv_dq_dk          dV, then dQ, then dK (dO released first, the reduce-adds overlap dK)
--modules adds whole other versions of the module (e.g. an earlier commit's, carried to
the GPU machine in a git-ignored folder), timed as they are.
Each copy is written next to the package as a real module (Gluon reads the source),
and swapped in as backward.backward_hopper (d256: backward_hopper.backward_hopper_d256).
bf16, 16k tokens, model dim 2048. Writes gluon_bwd_ablate[_d256].json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

import flashtile
from flashtile import bench
from flashtile.kernels import backward, backward_hopper, backward_hopper_d256
from gluon_ab import peers  # (this script's folder is on sys.path when it runs)
from module_copies import load_copy

SRC = backward_hopper.__file__
ATOMIC = """        gl.atomic_add(DQAcc + offs[:, None] + dq_cols[None, :], dq,
                      mask=(q_rows < seqlen_q)[:, None], sem="relaxed")"""
NO_ATOMIC = """        gl.store(DQAcc + offs[:, None] + dq_cols[None, :], dq,
                 mask=(q_rows < 0)[:, None])"""
REDUCE = """            _tma_reduce_add(dq_desc, [b, m, h, WG * HALF_D + i * BOX_D],
                            dq_buf.slice(i * BOX_D, BOX_D, dim=3))  # rows past S dropped"""
DQ_START = "        # dS^T to shared memory; once both halves are there"
DQ_END = "    # dS was taken w.r.t."
NO_DQ = """        dv, dk, p_op, ds_op = warpgroup_mma_wait(0, deps=[dv, dk, p_op, ds_op])
        mbarrier.arrive(empty.index(slot), count=1)

"""


D256_ISSUE = """        dv = warpgroup_mma(p_t, do.slice(col0, COLS, dim=1), dv, is_async=True)
        dk = warpgroup_mma(ds_t, q.slice(col0, COLS, dim=1), dk, is_async=True)
        dq0 = warpgroup_mma(ds_t.permute((1, 0)), k_dq0, dq_zero, use_acc=False, is_async=True)
        dq1 = warpgroup_mma(ds_t.permute((1, 0)), k_dq1, dq_zero, use_acc=False, is_async=True)
"""
D256_WAIT = """        dv = warpgroup_mma_wait(3, deps=[dv])
        mbarrier.arrive(do_empty.index(dslot), count=1)  # dO's last reader is done
        dk = warpgroup_mma_wait(2, deps=[dk])
        mbarrier.arrive(q_empty.index(slot), count=1)
        dq0 = warpgroup_mma_wait(1, deps=[dq0])
        tma.store_wait(0)  # the previous chunk's copies have read dq_buf
        reduce_dq(dq0, dq_buf, dq_desc, b, m, h, col0, grad_scale)
        dq1 = warpgroup_mma_wait(0, deps=[dq1])
        tma.store_wait(0)
        reduce_dq(dq1, dq_buf, dq_desc, b, m, h, col0 + CHUNK, grad_scale)
"""
D256_REDUCE = "        reduce_dq(dq"  # (stage + reduce-add, hopper_common.py)


def _order(names: list[str]) -> str:
    """The d256 loop's issue and wait block with the four wgmmas in this order."""
    lines = D256_ISSUE.splitlines()
    issue = {n: next(x for x in lines if x.strip().startswith(n + " =")) for n in names}
    after = {"dv": ["        mbarrier.arrive(do_empty.index(dslot), count=1)"],
             "dk": ["        mbarrier.arrive(q_empty.index(slot), count=1)"],
             "dq0": ["        tma.store_wait(0)",
                     "        reduce_dq(dq0, dq_buf, dq_desc, b, m, h, col0, grad_scale)"],
             "dq1": ["        tma.store_wait(0)",
                     "        reduce_dq(dq1, dq_buf, dq_desc, b, m, h, col0 + CHUNK, grad_scale)"]}
    out = [issue[n] for n in names]
    for i, n in enumerate(names):
        out += [f"        {n} = warpgroup_mma_wait({3 - i}, deps=[{n}])", *after[n]]
    return "\n".join(out) + "\n"


def _edit_d256(src: str, name: str) -> str:
    if name == "no_reduce":  # (since session 8e this drops the staging stores too)
        assert D256_REDUCE in src
        return "\n".join("        pass" if x.startswith(D256_REDUCE) else x
                         for x in src.splitlines())
    if name in ("dq_first", "dv_dq_dk"):
        assert D256_ISSUE + D256_WAIT in src
        order = ["dq0", "dq1", "dv", "dk"] if name == "dq_first" else ["dv", "dq0", "dq1", "dk"]
        return src.replace(D256_ISSUE + D256_WAIT, _order(order))
    assert name == "real"
    return src


def _edit(src: str, name: str) -> str:
    if name == "no_atomic":
        assert ATOMIC in src
        return src.replace(ATOMIC, NO_ATOMIC)
    if name == "no_reduce":
        assert REDUCE in src
        return src.replace(REDUCE, "            pass")
    if name == "no_dq":
        a, b = src.index(DQ_START), src.index(DQ_END)
        return src[:a] + NO_DQ + src[b:]
    if name == "stages3":
        return src.replace("CONFIGS = {128: (2, 240, 24)}", "CONFIGS = {128: (3, 240, 24)}")
    assert name == "real"
    return src


def _load(name: str, folder: str, path: str = SRC):
    edit = {SRC: _edit, backward_hopper_d256.__file__: _edit_d256}.get(path)
    mod = load_copy(path, f"bwd_hopper_{name}", folder,
                    edit=(lambda src: edit(src, name)) if edit else None)
    mod.MIN_FLOPS = 0.0
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--variants", nargs="+", default=["real", "no_atomic", "no_dq", "stages3"])
    ap.add_argument("--modules", nargs="*", default=[])
    ap.add_argument("--head-dim", type=int, default=128, choices=[64, 128, 256])
    args = ap.parse_args()
    folder = tempfile.mkdtemp()
    d, seqlen = args.head_dim, args.seqlen
    src = backward_hopper_d256.__file__ if d == 256 else SRC
    mods = {name: _load(name, folder, src) for name in args.variants}
    for item in args.modules:
        name, path = item.split("=")
        mods[name] = _load(name, folder, path)
    batch, heads = max(1, 16384 // seqlen), 2048 // d
    sets = bench.make_inputs(batch, seqlen, heads, d, torch.bfloat16, "cuda")
    run_cudnn = peers(["sdpa-cudnn"])["sdpa-cudnn"]
    results, rows = [], []
    for causal in (False, True):
        flops = bench.attention_flops(batch, heads, seqlen, seqlen, d, causal, "bwd")
        tf = {}

        def ours(q, k, v, c, mod=None):
            backward.USE_HOPPER_KERNEL = mod is not None
            backward_hopper.MIN_FLOPS = backward_hopper.MIN_FLOPS_D256 = 0.0
            if mod is not None and d == 256:
                backward_hopper.backward_hopper_d256 = mod
            elif mod is not None:
                backward.backward_hopper = mod
            return flashtile.flash_attn_func(q, k, v, causal=c)

        for name, mod in [("triton", None), *mods.items()]:
            fn = lambda q, k, v, c, mod=mod: ours(q, k, v, c, mod)  # noqa: E731
            call = bench.pass_callable(fn, sets, causal, "bwd")
            tf[name] = bench.tflops(flops, bench.benchmark_ms(call, "cuda"))

        tf["sdpa-cudnn"] = bench.tflops(flops, bench.benchmark_ms(
            bench.pass_callable(run_cudnn, sets, causal, "bwd"), "cuda"))
        backward.backward_hopper = backward_hopper
        backward_hopper.backward_hopper_d256 = backward_hopper_d256
        results.append(dict(causal=causal, seqlen=seqlen, tflops=tf))
        rows.append([str(causal)] + [f"{v:.0f}" for v in tf.values()])
        print(*rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name()}, d{d}, S={seqlen}, backward TFLOP/s (bf16)")
    print(bench.table(["causal", *results[0]["tflops"]], rows))
    name = "gluon_bwd_ablate.json" if d == 128 else f"gluon_bwd_ablate_d{d}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
