"""V's keys-contiguous copy for FP8 P.V, in one pass.

Hopper's 8-bit wgmma takes its B operand K-major only, so FP8 V (keys x channels) must
reach the forward kernels with keys contiguous per (batch, KV head, channel). torch's
generic strided copy of an 8-dim permuted float8 view moves one byte per thread with
8-dim index arithmetic; this kernel reads [channels, keys] tiles of V coalesced along
the channels and writes them coalesced along the keys (Triton exchanges the layouts
through shared memory), and it applies `forward._permute_keys`' order and the zero
padding on the way.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import batch_head
from .config import batch_head_grid
from .launcher import CachedKernel, PlanCache

BLOCK_S = 64  # keys per program


@triton.jit
def _source_key(pos, PERMUTE_KEYS: tl.constexpr):
    """The key stored at position pos: within each 16, position bits (b2 b1 b3 b0) hold
    key bits (b3 b2 b1 b0) (`forward._permute_keys` moves P's columns the same way)."""
    if PERMUTE_KEYS:
        lo = pos % 16
        key = (((lo >> 1) & 1) << 3) | (((lo >> 3) & 1) << 2) | (((lo >> 2) & 1) << 1) | (lo & 1)
        return pos - lo + key
    return pos


@triton.jit
def _transpose_kernel(V, Vt, stride_vb, stride_vs, stride_vh, stride_vd, stride_tb, stride_th,
                      stride_td, kv_heads, seqlen, padded, HEAD_DIM: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
                      PERMUTE_KEYS: tl.constexpr):
    """Vt[b, h, d, pos] = V[b, key(pos), h, d], 0 for key >= seqlen (up to padded)."""
    bh = batch_head()
    b = (bh // kv_heads).to(tl.int64)
    h = (bh % kv_heads).to(tl.int64)
    pos = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    key = _source_key(pos, PERMUTE_KEYS)
    d = tl.arange(0, BLOCK_D)
    src = (V + b * stride_vb + h * stride_vh + key[None, :].to(tl.int64) * stride_vs
           + d[:, None] * stride_vd)
    x = tl.load(src, mask=(key[None, :] < seqlen) & (d[:, None] < HEAD_DIM), other=0)
    dst = Vt + b * stride_tb + h * stride_th + d[:, None] * stride_td + pos[None, :]
    tl.store(dst, x, mask=(pos[None, :] < padded) & (d[:, None] < HEAD_DIM))


_transpose = CachedKernel(_transpose_kernel)
_PLANS = PlanCache()  # (shapes, strides, order) -> its BoundLaunch


def transposed_v(v: torch.Tensor, permute_keys: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """V copied with keys contiguous per (batch, KV head, channel): FP8 P.V needs V
    K-major on Hopper. v: (B, S, Hk, D) or varlen (total, Hk, D), last dim contiguous.
    Returns the copy viewed back in V's shape (for the pointer path), the copy itself
    ((B, Hk, D, S) or (Hk, D, total): descriptors need a contiguous last dim) and the
    stride between channels.

    permute_keys (dense only): keys stored in `forward._permute_keys`' order within each
    16, the sequence zero-padded to a multiple of 16 first."""
    dense = v.dim() == 4
    v4 = v if dense else v.unsqueeze(0)
    batch, seqlen, kv_heads, head_dim = v4.shape
    padded = -(-seqlen // 16) * 16 if permute_keys else seqlen
    vt = torch.empty((batch, kv_heads, head_dim, padded), dtype=v.dtype, device=v.device)
    # 8-bit values are moved as bytes (the interpreter's numpy has no float8).
    src, dst = (v4.view(torch.uint8), vt.view(torch.uint8)) if v.element_size() == 1 else (v4, vt)
    key = (v4.shape, v4.stride(), v.dtype, permute_keys)
    launch = _PLANS.get(key) or _PLANS.add(key, _transpose.bind(
        (triton.cdiv(padded, BLOCK_S), *batch_head_grid(batch, kv_heads)),
        (*src.stride(), *dst.stride()[:3], kv_heads, seqlen, padded),
        dict(HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_S=BLOCK_S,
             PERMUTE_KEYS=permute_keys, num_warps=4)))
    launch(src, dst)
    if dense:
        return vt.permute(0, 3, 1, 2), vt, vt.stride(-2)
    vt = vt[0]
    return vt.permute(2, 0, 1), vt, vt.stride(-2)
