"""Pieces shared by the Gluon Hopper kernels (forward_hopper.py, backward_hopper.py,
backward_hopper_d256.py): tensor descriptors, the dispatch rules they have in common,
and the two backward kernels' device helpers (query bands, tile order, dQ reduce-adds,
the dK / dV epilogue) and host launcher (`launch_backward`)."""

from __future__ import annotations

import functools
import math

import torch
from triton._C.libtriton import ir
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .common import box_descriptor, descriptor_ok, forward_flops
from .config import batch_head_grid, interpreter_active
from .launcher import BoundLaunch, PlanCache

GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16,
             torch.float8_e4m3fn: gl.float8e4nv, torch.float32: gl.float32}


@functools.lru_cache(maxsize=None)
def _default_layout(block_shape: tuple[int, ...], dtype: torch.dtype):
    return gl.NVMMASharedLayout.get_default_for(list(block_shape), GL_DTYPES[dtype])


def descriptor(x: torch.Tensor, block_shape: list[int]) -> TensorDescriptor:
    """A TMA descriptor over all of x with its default NVMMA (swizzled) layout.

    Built without the dataclass's __post_init__ and with the layout memoised: both
    re-derive, in Python on every launch, what `dense_call_ok` already checked (the
    tensors' TMA alignment) or what depends only on (block shape, dtype). So x must
    have passed `descriptor_ok` or be a fresh contiguous tensor (the dQ buffer, the
    transposed FP8 V): nothing here catches a misaligned one."""
    return box_descriptor(x, block_shape, TensorDescriptor,
                          layout=_default_layout(tuple(block_shape), x.dtype))


def dense_call_ok(q, k, tensors, *, softmax_scale, window_left, window_right, softcap,
                  alibi_slopes, dropout_p, min_flops: float) -> bool:
    """The rules both Gluon kernels share: dense (B, S, H, D) CUDA tensors on sm_90 (not
    the interpreter), causal or full attention with no softcap / ALiBi / dropout,
    softmax_scale > 0, at least `min_flops` of forward work (smaller calls are
    host-bound), non-empty sequences and TMA-aligned `tensors`. The dtype and head dim
    rules are each kernel's own."""
    if not (q.is_cuda and q.dim() == 4) or interpreter_active():
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return False
    if window_left != -1 or window_right not in (-1, 0):
        return False
    if softcap != 0.0 or alibi_slopes is not None or dropout_p > 0.0 or softmax_scale <= 0:
        return False
    batch, seqlen_q, heads, head_dim = q.shape
    if forward_flops(batch, heads, seqlen_q, k.shape[1], head_dim,
                     window_right == 0) < min_flops:
        return False
    return min(seqlen_q, k.shape[1]) > 0 and descriptor_ok(*tensors)


@builtin
def tma_reduce_add(tensor_desc, coord, src, _semantic=None):
    """Bulk reduce-add of a shared-memory tile into global memory through the copy engine
    (cp.reduce.async.bulk.tensor): Triton 3.6's Gluon builder has the op, but its `tma`
    module no wrapper. Completion as for a TMA store: `tma.store_wait`. The box must be
    one swizzle span wide: unlike TMA loads, the compiler does not split a reduce."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle,
                                              coord, src.handle)


@gluon.jit
def query_band(n0, seqlen_q, seqlen_k, KEYS: gl.constexpr, BLOCK_M: gl.constexpr,
               CAUSAL: gl.constexpr):
    """The query tiles that see keys [n0, n0 + KEYS): (diag, m_begin, n_m, n_masked).
    Query i sees key j iff j <= i + diag (causal; diag = seqlen_k otherwise), so under a
    causal mask the band starts at tile floor((n0 - diag) / BLOCK_M) and only its first
    n_masked tiles need the mask; n_m tiles in all."""
    if CAUSAL:
        diag = seqlen_k - seqlen_q
        m_begin = (gl.maximum(n0 - diag, 0) // BLOCK_M) * BLOCK_M
        m_unmasked = gl.maximum(n0 + KEYS - 1 - diag, 0)  # first query that sees all keys
        n_masked = (m_unmasked - m_begin + BLOCK_M - 1) // BLOCK_M
    else:
        diag = seqlen_k
        m_begin = gl.to_tensor(0)
        n_masked = gl.to_tensor(0)
    n_m = gl.maximum(seqlen_q - m_begin + BLOCK_M - 1, 0) // BLOCK_M
    return diag, m_begin, n_m, n_masked


@gluon.jit
def tile_coords(t, n_m, m_begin, hk, kv_group, BLOCK_M: gl.constexpr):
    """Query tile t of a backward CTA: each head of the GQA group in turn, each over the
    query band [m_begin, ...) that sees the CTA's keys. Returns (m, h)."""
    g = t // n_m
    return m_begin + (t - g * n_m) * BLOCK_M, hk * kv_group + g


@gluon.jit
def reduce_dq(dq, dq_buf, dq_desc, b, m, h, col0, grad_scale):
    """Stage a dQ tile (fp32 registers, [BLOCK_M, C]) in the [1, BLOCK_M, 1, C] shared
    buffer `dq_buf` and reduce-add it, scaled, into the dQ buffer at (b, m, h, col0), one
    128-byte swizzle span per copy (rows past S are dropped). The caller makes sure no
    earlier copy still reads `dq_buf` (`tma.store_wait`)."""
    BOX_D: gl.constexpr = dq_desc.block_type.shape[3]
    C: gl.constexpr = dq_buf.shape[3]
    gl.thread_barrier()  # every warp past that wait before any overwrites the buffer
    dq_buf.reshape([dq_buf.shape[1], C]).store(dq * grad_scale)
    fence_async_shared()  # the copy engine reads what this proxy wrote
    for i in gl.static_range(C // BOX_D):
        tma_reduce_add(dq_desc, [b, m, h, col0 + i * BOX_D], dq_buf.slice(i * BOX_D, BOX_D, dim=3))


def launch_backward(kernel, keys: int, block_m: int, dout, q, k, v, stats, dq_acc, dq, dk, dv,
                    *, softmax_scale: float, causal: bool, **constexprs):
    """The host side both Gluon backward kernels share: descriptors, one CTA per `keys`
    keys of each (batch, KV head), dQ added into the zeroed fp32 buffer dq_acc and then
    copied into dq, dK / dV written directly (equal strides)."""
    if dk.stride() != dv.stride():
        raise ValueError("dk and dv must have equal strides")
    key = (kernel, keys, block_m, q.shape, k.shape, dk.stride(), stats.shape, softmax_scale,
           causal, *constexprs.items())
    launch = _BACKWARD_PLANS.get(key) or _BACKWARD_PLANS.add(key, _plan_backward(
        kernel, keys, q, k, stats, dk, softmax_scale, causal, constexprs))
    head_dim = q.shape[-1]
    q_box, kv_box = [1, block_m, 1, head_dim], [1, keys, 1, head_dim]
    launch(descriptor(q, q_box), descriptor(dout, q_box), descriptor(k, kv_box),
           descriptor(v, kv_box),
           descriptor(dq_acc, [1, block_m, 1, 32]),  # 128 bytes: the swizzle span
           dk, dv, stats)
    dq.copy_(dq_acc)


_BACKWARD_PLANS = PlanCache()


def _plan_backward(kernel, keys: int, q, k, stats, dk, softmax_scale: float, causal: bool,
                   constexprs: dict) -> BoundLaunch:
    """`launch_backward`'s launch for these shapes and options (memoised on them)."""
    batch, seqlen_q, num_heads, _ = q.shape
    seqlen_k, kv_heads = k.shape[1], k.shape[2]
    grid = (-(-seqlen_k // keys), *batch_head_grid(batch, kv_heads))
    trailing = (stats.shape[-1], *dk.stride()[:3], num_heads, kv_heads, seqlen_q, seqlen_k,
                softmax_scale / math.log(2.0), softmax_scale)
    return kernel.bind(grid, trailing, dict(CAUSAL=causal, num_warps=4, **constexprs))


@gluon.jit
def store_dkdv(DK, DV, dk, dv, key0, col0, b, hk, seqlen_k, grad_scale, stride_kb, stride_ks,
               stride_kh, acc_layout: gl.constexpr):
    """Write a warpgroup's dK / dV block (rows = keys from key0, columns from col0; fp32
    registers in acc_layout) into the (B, Sk, Hk, D) gradients, keys past Sk dropped. dS
    was taken w.r.t. the scaled score, so the softmax scale is applied to dK once here."""
    ROWS: gl.constexpr = dk.shape[0]
    COLS: gl.constexpr = dk.shape[1]
    keys = key0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, acc_layout))
    cols = col0 + gl.arange(0, COLS, layout=gl.SliceLayout(0, acc_layout))
    offs = (b.to(gl.int64) * stride_kb + keys.to(gl.int64) * stride_ks
            + hk * stride_kh)[:, None] + cols[None, :]
    mask = (keys < seqlen_k)[:, None]
    gl.store(DK + offs, (dk * grad_scale).to(DK.dtype.element_ty), mask=mask)
    gl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=mask)
