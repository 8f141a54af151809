"""Compile flashtile's kernels for Hopper (sm_90a) on a machine without a GPU, and count
what the loop body turns into: no device time spent to read TTGIR, PTX and ptxas's
register / spill report.

    python3 benchmarks/offline_compile.py fwd --dtype fp8 --head-dim 128 --dump /tmp/k
    python3 benchmarks/offline_compile.py fwd_gluon --head-dim 128 --causal --sass
    python3 benchmarks/offline_compile.py bwd_gluon --head-dim 128 --sass

Runs the real launcher (`forward.attention_forward`) on CPU tensors with Triton's
driver replaced by a stub that reports an sm_90 target, catches the launch in
Triton's JIT cache hook (exact signature, constexprs, specialisation attributes and
options), compiles that for sm_90a and prints the counts. Config overrides
(--block-m ...) patch the config table first, as fwd_variants.py does on the GPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

from flashtile.kernels import backward, config, forward

TARGET = GPUTarget("cuda", 90, 32)
DTYPES = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp16": torch.float16}


class _StubDriver:
    """Enough of Triton's CUDA driver for the JIT to bind arguments without a GPU."""

    def get_current_target(self):
        return TARGET

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def capture_launch(launch):
    """Run `launch()`; return [(kernel, signature, constexprs, options, attrs)] it asked for."""
    caught = []

    def hook(*args, **kwargs):
        comp = kwargs["compile"]
        caught.append((kwargs["fn"].jit_function, comp["signature"], comp["constants"],
                       comp["configs"][0], options_of(comp)))
        return True  # skip compiling and launching

    old_hook = knobs.runtime.jit_cache_hook
    driver.set_active(_StubDriver())  # stays: a CPU-only machine has no driver to go back to
    knobs.runtime.jit_cache_hook = hook
    try:
        launch()
    finally:
        knobs.runtime.jit_cache_hook = old_hook
    return caught


def options_of(comp) -> dict:
    """The compile options the launch asked for (the cache key's str(options) does not parse)."""
    return {name: comp[name] for name in ("num_warps", "num_ctas", "num_stages",
                                           "enable_fp_fusion", "launch_cooperative_grid")}


def compile_sm90(fn, signature, constants, attrs, options):
    from triton.experimental.gluon._runtime import GluonASTSource, GluonJITFunction
    source = GluonASTSource if isinstance(fn, GluonJITFunction) else triton.compiler.ASTSource
    return triton.compile(source(fn, signature, constants, attrs), target=TARGET, options=options)


def ptxas_report(ptx: str) -> str:
    """ptxas -v for sm_90a: registers, spills, shared memory."""
    ptxas = Path(triton.__file__).parent / "backends/nvidia/bin/ptxas"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        res = subprocess.run([str(ptxas), "-v", "--gpu-name", "sm_90a", str(path), "-o",
                              str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    return " ".join(line.split("info    : ")[-1] for line in res.stderr.splitlines()
                    if "registers" in line or "spill" in line or "Performance" in line)


TTGIR_OPS = ["ttg.convert_layout", "ttg.local_alloc", "ttg.local_load", "ttg.local_store",
             "ttg.async_copy_global_to_local", "ttng.async_tma_copy_global_to_local",
             "ttng.warp_group_dot ", "ttng.warp_group_dot_wait", "tt.fp_to_fp", "scf.for"]
PTX_OPS = ["wgmma.mma_async", "wgmma.wait_group", "cvt.rn.satfinite.e4m3x2", "shfl.sync",
           "prmt.b32", "ld.shared", "st.shared", "ldmatrix", "stmatrix", "bar.sync",
           "cp.async.cg", "cp.async.bulk.tensor", "ex2.approx"]


def sass_loops(cubin: bytes) -> list[str]:
    """SASS op counts of every loop body (a backward branch's [target, branch] range)."""
    nvdisasm = Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([str(nvdisasm), "-c", "-hex", str(path)], capture_output=True,
                              text=True).stdout
    instr = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);",
                       sass)
    addr = [int(a, 16) for a, _, _ in instr]
    lines = []
    for i, (a, op, args) in enumerate(instr):
        target = re.search(r"`\(\.L_x_(\d+)\)", args)
        if not op.startswith("BRA") or not target:
            continue
        label = re.search(r"^\.L_x_%s:\s*$" % target.group(1), sass, re.M)
        if not label:
            continue
        nxt = re.search(r"/\*([0-9a-f]{4,})\*/", sass[label.end():])
        start = int(nxt.group(1), 16)
        if start >= int(a, 16):
            continue
        body = [o for (x, o, _), ad in zip(instr, addr) if start <= ad <= int(a, 16)]
        ops = collections.Counter(o.split(".")[0] for o in body)
        lines.append(f"  loop {start:#x}-{int(a, 16):#x}: {len(body)} instr: " +
                     ", ".join(f"{k} {v}" for k, v in ops.most_common(14)))
    return lines


def summarise(compiled) -> list[str]:
    ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
    lines = [f"shared {compiled.metadata.shared} B, {ptxas_report(ptx)}"]
    lines += [f"  ttgir {op.strip():40s} {ttgir.count(op)}" for op in TTGIR_OPS]
    lines += [f"  ptx   {op:40s} {len(re.findall(re.escape(op), ptx))}" for op in PTX_OPS]
    return lines


def forward_launch(args):
    shape = (args.batch, args.seqlen, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape).to(DTYPES[args.dtype]) for _ in range(3))
    descales = None
    if args.dtype == "fp8":
        descales = tuple(torch.ones(args.batch, args.heads) for _ in range(3))
    return lambda: forward.attention_forward(
        q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=args.seqlen,
        max_seqlen_k=args.seqlen, softmax_scale=args.head_dim ** -0.5, window_left=-1,
        window_right=0 if args.causal else -1, softcap=0.0, alibi_slopes=None,
        dropout_p=0.0, seed=None, return_probs=False, descales=descales)


def gluon_forward_launch(args):
    """The Gluon forward (forward_hopper.py) with its CONFIGS row, or --config
    block_n,k_stages,v_stages,consumer_regs,loader_regs patched into that row."""
    from flashtile.kernels import forward_hopper
    dtype = DTYPES[args.dtype]
    shape = (args.batch, args.seqlen, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape).to(dtype) for _ in range(3))
    is_fp8 = args.dtype == "fp8"
    out = torch.empty(shape, dtype=torch.bfloat16 if is_fp8 else dtype)
    lse = torch.empty(args.batch, args.heads, args.seqlen)
    if args.config:
        row = forward_hopper._row(dtype, args.head_dim)
        forward_hopper.CONFIGS[row] = tuple(int(x) for x in args.config.split(","))
    return lambda: forward_hopper.attention_forward(
        q, k, v, out, lse, softmax_scale=args.head_dim ** -0.5, causal=args.causal,
        descale=torch.ones(3, args.batch, args.heads) if is_fp8 else None)


def backward_launch(args):
    if args.dtype == "fp8":
        raise SystemExit("bwd: FP8 is forward-only")
    dtype = DTYPES[args.dtype]
    shape = (args.batch, args.seqlen, args.heads, args.head_dim)
    q, k, v, out, dout = (torch.randn(shape).to(dtype) for _ in range(5))
    lse = torch.zeros(args.batch, args.heads, args.seqlen)
    return lambda: backward.attention_backward(
        dout, q, k, v, out, lse, cu_seqlens_q=None, cu_seqlens_k=None,
        max_seqlen_q=args.seqlen, max_seqlen_k=args.seqlen, softmax_scale=args.head_dim ** -0.5,
        window_left=-1, window_right=0 if args.causal else -1, softcap=0.0, alibi_slopes=None,
        dropout_p=0.0, seed=None)


def gluon_backward_launch(args):
    """The Gluon backward (backward_hopper.py) with its CONFIGS row, or --config
    stages,consumer_regs,loader_regs patched into that row."""
    from flashtile.kernels import backward_hopper
    dtype = DTYPES[args.dtype]
    shape = (args.batch, args.seqlen, args.heads, args.head_dim)
    q, k, v, dout = (torch.randn(shape).to(dtype) for _ in range(4))
    dq, dk, dv = (torch.empty(shape, dtype=dtype) for _ in range(3))
    stats = backward_hopper.row_stats(torch.zeros(args.batch, args.heads, args.seqlen))
    if args.config:
        backward_hopper.CONFIGS[args.head_dim] = tuple(int(x) for x in args.config.split(","))
    return lambda: backward_hopper.attention_backward(
        dout, q, k, v, stats, backward_hopper.dq_buffer(q), dq, dk, dv,
        softmax_scale=args.head_dim ** -0.5, causal=args.causal)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pass_name", choices=["fwd", "bwd", "fwd_gluon", "bwd_gluon"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp8"])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--config", help="block_m,block_n,warps,stages[,tma] overriding the table"
                    " (fwd_gluon: block_n,k_stages,v_stages,consumer_regs,loader_regs;"
                    " bwd_gluon: stages,consumer_regs,loader_regs)")
    ap.add_argument("--table-key", help="which pass --config overrides (e.g. bwd_dkdv)")
    ap.add_argument("--set", action="append", default=[],
                    help="forward module switch NAME=0/1 (e.g. FP8_V_TRANSPOSED=0)")
    ap.add_argument("--sass", action="store_true", help="SASS op counts per loop")
    ap.add_argument("--dump", help="folder for the .ttgir / .ptx / .sass of each kernel")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        sys.exit("unset TRITON_INTERPRET: this compiles for the GPU")
    for item in args.set:
        name, val = item.split("=")
        setattr(forward if hasattr(forward, name) else backward, name, bool(int(val)))
    if args.config and not args.pass_name.endswith("_gluon"):
        f = [int(x) for x in args.config.split(",")]
        key = (args.table_key or "fwd", config._dtype_class(DTYPES[args.dtype]),
               config.padded_head_dim(args.head_dim))
        config._GPU_TABLE[key] = config.KernelConfig(*f[:4], bool(f[4]) if len(f) > 4 else False)
    launch = {"fwd": forward_launch, "bwd": backward_launch,
              "fwd_gluon": gluon_forward_launch, "bwd_gluon": gluon_backward_launch}[args.pass_name]
    for fn, *spec in capture_launch(launch(args)):
        compiled = compile_sm90(fn, *spec)
        print(f"{fn.__name__}  " + "\n".join(summarise(compiled)))
        if args.sass:
            print("\n".join(sass_loops(compiled.asm["cubin"])))
        lds = re.findall(r"ld\.global[a-z0-9.]*", compiled.asm["ptx"])
        print("  ptx   global loads: " + ", ".join(f"{op} x{lds.count(op)}"
                                                   for op in sorted(set(lds))))
        if args.dump:
            out = Path(args.dump)
            out.mkdir(parents=True, exist_ok=True)
            for ext in ("ttgir", "ptx"):
                (out / f"{fn.__name__}.{ext}").write_text(compiled.asm[ext])
            (out / f"{fn.__name__}.cubin").write_bytes(compiled.asm["cubin"])


if __name__ == "__main__":
    main()
