"""Launch configurations for the flashtile Triton kernels: one table, no autotuning.

A configuration is looked up by

* the pass: ``"fwd"`` (forward, also used by the probs kernel), ``"bwd_dkdv"``
  (dK/dV, one program per key block), ``"bwd_dq"`` (dQ, one program per query
  block) and ``"bwd_pre"`` (Delta = rowsum(dO * O));
* ``block_d``: the head dim padded to a power of two (at least 16);
* the dtype class: ``"16bit"`` (fp16 / bf16) or ``"fp32"`` (twice the bytes per
  element, so smaller tiles keep shared memory and registers in budget);
* whether Triton runs in its interpreter (``TRITON_INTERPRET=1``): there every
  pass uses 16x16 tiles, which is what keeps the CPU tests fast and makes even
  tiny test shapes cross several block boundaries.

``block_m`` always counts queries and ``block_n`` keys. The GPU rows target
Hopper (H100 / H200): 128-row query tiles for the forward and dQ passes, 128-key
tiles for dK/dV where registers allow, fewer rows as the head dim grows. The
16-bit rows for head dims 64, 128 and 256 were picked by timing a handful of
candidates per pass on an H200 (bf16, B*H = 64 or 32, seqlen 4096); the other
rows follow them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KernelConfig:
    block_m: int  # queries per tile
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int
    tma: bool = False  # move tiles through TMA tensor descriptors where the layout allows
    # forward / dQ: launch each head's last (under a causal mask, longest) query blocks
    # first. Measured (benchmarks/causal_order.py, H200): +1-3% d128, up to +9% FP8,
    # -4% bf16 d256 forward and -5% d256 forward + backward at 2k-4k.
    longest_first: bool = True


def interpreter_active() -> bool:
    """True when Triton executes kernels in its Python interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for launch grids. (triton.cdiv is a constexpr function in Triton 3.6:
    ~6 us per host call, more than the rest of a small launch's grid arithmetic.)"""
    return -(-a // b)


MAX_GRID_YZ = 65535  # CUDA's limit on grid axes 1 and 2


def batch_head_grid(batch: int, heads: int) -> tuple[int, int]:
    """Grid axes 1 and 2 that cover batch * heads programs exactly (kernels read the
    index back with `common.batch_head`): axis 1 alone while it fits CUDA's limit, else
    heads * g on axis 1 and batch / g on axis 2, g the largest divisor of batch that fits
    (axis 1 keeps consecutive heads together, as before)."""
    if batch * heads <= MAX_GRID_YZ:
        return batch * heads, 1
    fits = min(batch, MAX_GRID_YZ // heads)
    g = max((d for d in range(1, fits + 1) if batch % d == 0), default=0)
    if g == 0 or batch // g > MAX_GRID_YZ:
        raise ValueError(f"batch {batch} x heads {heads} does not fit a CUDA launch grid")
    return heads * g, batch // g


def padded_head_dim(head_dim: int) -> int:
    """Head dim rounded up to a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def _dtype_class(dtype: torch.dtype) -> str:
    if dtype == torch.float8_e4m3fn:
        return "fp8"
    return "fp32" if dtype == torch.float32 else "16bit"


_C = KernelConfig
# (pass, dtype class, block_d) -> config. block_d is 16, 32, 64, 128 or 256.
_GPU_TABLE: dict[tuple[str, str, int], KernelConfig] = {
    # forward: a Q tile stays in registers while K/V tiles stream through
    # (TMA: +5% at d64, +20% at d128 with 128-key tiles, -20% at d256; NOTES.md)
    ("fwd", "16bit", 16): _C(128, 64, 4, 3, tma=True),
    ("fwd", "16bit", 32): _C(128, 64, 4, 3, tma=True),
    ("fwd", "16bit", 64): _C(128, 64, 4, 3, tma=True),
    ("fwd", "16bit", 128): _C(128, 128, 8, 3, tma=True),
    ("fwd", "16bit", 256): _C(128, 64, 8, 2, longest_first=False),
    # FP8 forward (V transposed by the host; TMA through a (B, Hk, D, S) descriptor over
    # it): the ALU work per score limits it, so two 4-warp CTAs per SM at d <= 128
    # (session 5, NOTES.md)
    ("fwd", "fp8", 16): _C(64, 128, 4, 3),
    ("fwd", "fp8", 32): _C(64, 128, 4, 3),
    ("fwd", "fp8", 64): _C(64, 128, 4, 3),
    ("fwd", "fp8", 128): _C(64, 128, 4, 3, tma=True),
    ("fwd", "fp8", 256): _C(128, 64, 8, 3, tma=True),
    ("fwd", "fp32", 16): _C(64, 64, 4, 2),
    ("fwd", "fp32", 32): _C(64, 64, 4, 2),
    ("fwd", "fp32", 64): _C(64, 32, 4, 2),
    ("fwd", "fp32", 128): _C(64, 32, 4, 2),
    ("fwd", "fp32", 256): _C(32, 32, 4, 1),
    # dK/dV: K, V and two fp32 accumulators stay resident while Q/dO stream through
    ("bwd_dkdv", "16bit", 16): _C(32, 128, 4, 3),
    ("bwd_dkdv", "16bit", 32): _C(32, 128, 4, 3),
    ("bwd_dkdv", "16bit", 64): _C(32, 128, 4, 3),
    ("bwd_dkdv", "16bit", 128): _C(64, 128, 8, 2),
    ("bwd_dkdv", "16bit", 256): _C(64, 32, 4, 2),
    ("bwd_dkdv", "fp32", 16): _C(32, 64, 4, 2),
    ("bwd_dkdv", "fp32", 32): _C(32, 64, 4, 2),
    ("bwd_dkdv", "fp32", 64): _C(32, 64, 4, 2),
    ("bwd_dkdv", "fp32", 128): _C(32, 64, 8, 1),
    ("bwd_dkdv", "fp32", 256): _C(16, 32, 8, 1),
    # dK/dV with dQ fused in (reduce-adds of dS K into an fp32 buffer): only used with
    # backward.FUSED_DQ, an experiment that is off (slower as measured, NOTES.md)
    ("bwd_dkdv_dq", "16bit", 16): _C(32, 128, 4, 3),
    ("bwd_dkdv_dq", "16bit", 32): _C(32, 128, 4, 3),
    ("bwd_dkdv_dq", "16bit", 64): _C(32, 128, 4, 3),
    ("bwd_dkdv_dq", "16bit", 128): _C(64, 128, 8, 2),
    ("bwd_dkdv_dq", "16bit", 256): _C(32, 32, 4, 2),
    ("bwd_dkdv_dq", "fp32", 16): _C(32, 64, 4, 2),
    ("bwd_dkdv_dq", "fp32", 32): _C(32, 64, 4, 2),
    ("bwd_dkdv_dq", "fp32", 64): _C(32, 64, 4, 2),
    ("bwd_dkdv_dq", "fp32", 128): _C(32, 64, 8, 1),
    ("bwd_dkdv_dq", "fp32", 256): _C(16, 32, 8, 1),
    # dQ: Q, dO and one fp32 accumulator stay resident while K/V stream through
    ("bwd_dq", "16bit", 16): _C(64, 64, 4, 3, tma=True),
    ("bwd_dq", "16bit", 32): _C(64, 64, 4, 3, tma=True),
    ("bwd_dq", "16bit", 64): _C(64, 64, 4, 3, tma=True),
    ("bwd_dq", "16bit", 128): _C(64, 64, 4, 3, tma=True),
    ("bwd_dq", "16bit", 256): _C(64, 32, 4, 2, longest_first=False),
    ("bwd_dq", "fp32", 16): _C(64, 32, 4, 2),
    ("bwd_dq", "fp32", 32): _C(64, 32, 4, 2),
    ("bwd_dq", "fp32", 64): _C(64, 32, 4, 2),
    ("bwd_dq", "fp32", 128): _C(64, 32, 8, 1),
    ("bwd_dq", "fp32", 256): _C(32, 32, 8, 1),
}
# Delta = rowsum(dO * O) is a memory-bound row reduction: same for every dtype
for _d in (16, 32, 64, 128, 256):
    for _cls in ("16bit", "fp32"):
        _GPU_TABLE[("bwd_pre", _cls, _d)] = _C(128 if _d <= 64 else 64, 0, 4, 1)

# (TMA on, so CPU tests cover the descriptor path; layouts it cannot take fall back)
_INTERPRETER_CONFIG = KernelConfig(16, 16, 1, 1, tma=True)


# Short causal forwards (at most SHORT_CAUSAL_MAX_ROWS queries) take these rows instead:
# with 64-row query blocks less of each block is masked away and there are twice the
# CTAs. H200, d64 causal: 1k 325 vs 279 TFLOP/s, 2k 359 vs 347; at 16k the 128-row
# blocks win (439 vs 421), and at d256 every smaller block lost (NOTES.md session 10).
SHORT_CAUSAL_MAX_ROWS = 2048
_SHORT_CAUSAL_TABLE = {("fwd", "16bit", 64): _C(64, 64, 4, 3, tma=True)}


def get_config(pass_name: str, head_dim: int, dtype: torch.dtype, *,
               short_causal: bool = False) -> KernelConfig:
    """The launch configuration of ``pass_name`` for this head dim and dtype
    (`short_causal`: a causal call of at most SHORT_CAUSAL_MAX_ROWS queries)."""
    block_d = padded_head_dim(head_dim)
    if block_d > 256:
        raise ValueError(f"head dim {head_dim} > 256 is not supported by the Triton kernels")
    if interpreter_active():
        return _INTERPRETER_CONFIG
    key = (pass_name, _dtype_class(dtype), block_d)
    if short_causal and key in _SHORT_CAUSAL_TABLE:
        return _SHORT_CAUSAL_TABLE[key]
    return _GPU_TABLE[key]
