"""FlashAttention-3-style forward for Hopper (sm_90), written in Gluon.

Triton's compiler waits on every wgmma right after issuing it, so in the Triton
kernel (`forward.py`) the tensor cores idle while the softmax runs. Gluon (Triton's
lower-level dialect) exposes the asynchronous wgmma and its wait explicitly, which
lets this kernel overlap them the way FlashAttention-3 does within a warpgroup:

    S_next = Q K_j^T        issued
    O     += P_{j-1} V_{j-1} issued
    wait for S_next only     (P.V still running)
    softmax(S_next)          overlaps P.V on the tensor cores
    wait for P.V, rescale O

Warp specialisation as in FlashAttention-3: one CTA is a producer warp (`_loader`:
TMA copies of Q, then K and V tiles into two rings of shared-memory slots with "full"
mbarriers) and two consumer warpgroups (`_consumer`: 64 query rows each), which release
a slot through its "empty" mbarrier once they are done with it. K and V have rings of
their own because K_j is done a whole step before V_j (after Q K_j^T, not P_j V_j):
its slot refills a step earlier, so two slots each give loads a step of slack.

Scope (`supports` decides; everything else takes the Triton kernel): dense (B, S, H, D)
inputs on sm_90 with TMA-aligned strides, causal or not (no other window), no softcap /
ALiBi / dropout / probs, softmax_scale > 0, and a (dtype, head dim) row in ENABLED:
fp16 / bf16 at d128 and d256, FP8 (e4m3) at d256 today. The d64 rows and FP8 d128
compile and pass the GPU tests but are no faster than the Triton kernel, so they are off.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from .common import LN2, LOG2E, TMA_MIN_FLOPS
from .config import batch_head_grid
from .hopper_common import dense_call_ok, descriptor
from .launcher import BoundLaunch, CachedKernel, PlanCache
from .layout import transposed_v


@gluon.jit
def _loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_full, k_empty, v_full,
            v_empty, b, h, hk, m0, n_tiles):
    """Producer warp: Q's two halves once, then K and V tiles into their own rings. A slot
    is reused once both consumers arrived on its `empty` barrier: a K slot as soon as its
    Q K^T is done, a V slot after its P.V. Copies are issued in order (K_j, V_j, K_j+1,
    ...), so a deeper ring than the other one gains nothing: the shipped rows have equal
    depths. (Partitions get their compile-time sizes from the buffers' shapes: Triton 3.6
    passes only values.)"""
    K_STAGES: gl.constexpr = k_smem.shape[0]
    V_STAGES: gl.constexpr = v_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[2]
    V_T: gl.constexpr = q_smem.dtype.is_fp8()
    half: gl.constexpr = q_desc.block_type.shape[1]
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, m0, h, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [b, m0 + half, h, 0], q_bar, q_smem.index(1))
    for j in range(n_tiles):
        slot = j % K_STAGES
        mbarrier.wait(k_empty.index(slot), ((j // K_STAGES) & 1) ^ 1, pred=j >= K_STAGES)
        mbarrier.expect(k_full.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, j * BLOCK_N, hk, 0], k_full.index(slot),
                                        k_smem.index(slot))
        slot = j % V_STAGES
        mbarrier.wait(v_empty.index(slot), ((j // V_STAGES) & 1) ^ 1, pred=j >= V_STAGES)
        bar = v_full.index(slot)
        mbarrier.expect(bar, v_desc.block_type.nbytes)
        if V_T:  # (B, Hk, D, S) copy of V: keys contiguous, as FP8 P.V needs
            tma.async_copy_global_to_shared(v_desc, [b, hk, 0, j * BLOCK_N], bar,
                                            v_smem.index(slot))
        else:
            tma.async_copy_global_to_shared(v_desc, [b, j * BLOCK_N, hk, 0], bar,
                                            v_smem.index(slot))


@gluon.jit
def _softmax_step(s, m_i, l_i, rows, n, qk_scale, seqlen_k, diag,
                  BLOCK_N: gl.constexpr, MASKED: gl.constexpr, s_layout: gl.constexpr):
    """Online softmax over one score tile s = Q K^T (raw, unscaled; qk_scale > 0 folds
    softmax_scale * log2(e)): returns (P, alpha, m_new, l_new) in base 2."""
    if MASKED:  # past the keys' end, or above the diagonal (query i sees keys <= i + diag)
        cols = n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        visible = (cols[None, :] < seqlen_k) & (cols[None, :] <= rows[:, None] + diag)
        s = gl.where(visible, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)  # all-masked rows stay at 0
    p = gl.exp2(s * qk_scale - m_ref[:, None])
    alpha = gl.exp2(m_i - m_ref)
    l_new = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_new


@gluon.jit
def _softmax_tile(s, m_i, l_i, rows, j, n_full, qk_scale, seqlen_k, diag,
                  BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """`_softmax_step` of key tile j, with the mask only where the tile needs one."""
    if j >= n_full:
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, rows, j * BLOCK_N, qk_scale, seqlen_k,
                                           diag, BLOCK_N, True, s_layout)
    else:
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, rows, j * BLOCK_N, qk_scale, seqlen_k,
                                           diag, BLOCK_N, False, s_layout)
    return p, alpha, m_i, l_i


@gluon.jit
def _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_full, k_empty, v_full, v_empty,
              Lse, wg, b, h, m0, n_tiles, n_full, diag, seqlen_q, seqlen_k, qk_scale,
              out_scale, stride_lb, stride_lh):
    """One warpgroup: 64 query rows (half `wg` of the CTA's block), start to finish.
    Query i sees keys <= i + diag (causal; diag = seqlen_k otherwise)."""
    dtype: gl.constexpr = q_smem.dtype
    IS_FP8: gl.constexpr = dtype.is_fp8()
    ROWS: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    K_STAGES: gl.constexpr = k_smem.shape[0]
    V_STAGES: gl.constexpr = v_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[2]
    k_width: gl.constexpr = 256 // dtype.primitive_bitwidth
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, k_width])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, k_width])
    p_layout: gl.constexpr = gl.DotOperandLayout(
        operand_index=0, parent=o_layout, k_width=32 // dtype.primitive_bitwidth)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)

    r0 = m0 + wg * ROWS
    rows = r0 + gl.arange(0, ROWS, layout=row_layout)
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([ROWS], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    q = q_smem.index(wg).reshape([ROWS, HEAD_DIM])
    mbarrier.wait(q_bar, 0)

    if n_tiles > 0:
        # Prologue: the first score tile and its softmax.
        mbarrier.wait(k_full.index(0), 0)
        s = warpgroup_mma(q, _kt(k_smem.index(0), BLOCK_N, HEAD_DIM), s_zero,
                          use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=[s])
        mbarrier.arrive(k_empty.index(0), count=1)
        p, alpha, m_i, l_i = _softmax_tile(s, m_i, l_i, rows, 0, n_full, qk_scale, seqlen_k,
                                           diag, BLOCK_N, s_layout)
        for j in range(1, n_tiles):
            k_slot = j % K_STAGES
            v_slot = (j - 1) % V_STAGES
            mbarrier.wait(k_full.index(k_slot), (j // K_STAGES) & 1)
            mbarrier.wait(v_full.index(v_slot), ((j - 1) // V_STAGES) & 1)
            pv = _p_operand(p, dtype, p_layout)
            s = warpgroup_mma(q, _kt(k_smem.index(k_slot), BLOCK_N, HEAD_DIM), s_zero,
                              use_acc=False, is_async=True)
            acc = warpgroup_mma(pv, _v_operand(v_smem.index(v_slot), BLOCK_N, HEAD_DIM, IS_FP8),
                                acc, is_async=True)
            s = warpgroup_mma_wait(1, deps=[s])  # S_j is ready; P.V may still run
            mbarrier.arrive(k_empty.index(k_slot), count=1)  # K_j: the loader may refill
            p, alpha, m_i, l_i = _softmax_tile(s, m_i, l_i, rows, j, n_full, qk_scale,
                                               seqlen_k, diag, BLOCK_N, s_layout)
            acc = _wait_pv(acc, pv, IS_FP8)
            mbarrier.arrive(v_empty.index(v_slot), count=1)
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        # The last tile's P.V.
        last = (n_tiles - 1) % V_STAGES
        mbarrier.wait(v_full.index(last), ((n_tiles - 1) // V_STAGES) & 1)
        pv = _p_operand(p, dtype, p_layout)
        acc = warpgroup_mma(pv, _v_operand(v_smem.index(last), BLOCK_N, HEAD_DIM, IS_FP8),
                            acc, is_async=True)
        acc = _wait_pv(acc, pv, IS_FP8)

    # Normalise once; rows that saw no key get out = 0 and LSE = -inf.
    empty_row = l_i == 0.0
    inv_l = out_scale / gl.where(empty_row, 1.0, l_i)
    out = acc * gl.convert_layout(inv_l, gl.SliceLayout(1, o_layout))[:, None]
    lse = gl.where(empty_row, float("-inf"),
                   (m_i + gl.log2(gl.where(empty_row, 1.0, l_i))) * LN2)
    gl.store(Lse + b.to(gl.int64) * stride_lb + h * stride_lh + rows, lse, mask=rows < seqlen_q)
    o_tile = o_smem.index(wg)
    o_tile.reshape([ROWS, HEAD_DIM]).store(out.to(o_desc.dtype))
    fence_async_shared()  # the copy engine reads o_tile next
    tma.async_copy_shared_to_global(o_desc, [b, r0, h, 0], o_tile)  # clipped at S
    tma.store_wait(0)


@gluon.jit
def _fwd_kernel(q_desc, k_desc, v_desc, o_desc, Lse, Descale, stride_lb, stride_lh,
                stride_desc, num_heads, kv_group, seqlen_q, seqlen_k, qk_scale,
                HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr,
                V_STAGES: gl.constexpr,
                CAUSAL: gl.constexpr, IS_FP8: gl.constexpr, LONGEST_FIRST: gl.constexpr,
                CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr):
    """One CTA = 2 * 64 query rows of one (batch, head): a producer warp and two
    consumer warpgroups (this kernel's 4 warps and a 4-warp worker)."""
    dtype: gl.constexpr = q_desc.dtype
    ROWS: gl.constexpr = q_desc.block_type.shape[1]
    pid_m = gl.program_id(0)
    if LONGEST_FIRST:  # under a causal mask the last query blocks see the most keys
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1) + gl.program_id(2) * gl.num_programs(1)  # config.batch_head_grid
    b = bh // num_heads
    h = bh % num_heads
    hk = h // kv_group  # GQA: consecutive query heads share one KV head
    m0 = pid_m * 2 * ROWS

    # Key tiles these rows see: [0, n_tiles); from n_full on they need a mask.
    if CAUSAL:  # query i sees keys <= i + diag
        diag = seqlen_k - seqlen_q
        n_end = gl.minimum(seqlen_k, gl.maximum(m0 + 2 * ROWS + diag, 0))
        n_full = gl.minimum(gl.maximum(m0 + diag + 1, 0) // BLOCK_N, seqlen_k // BLOCK_N)
    else:
        diag = seqlen_k
        n_end = seqlen_k
        n_full = seqlen_k // BLOCK_N
    n_tiles = (n_end + BLOCK_N - 1) // BLOCK_N

    out_scale = gl.to_tensor(1.0)  # (partitions take values, not Python literals)
    if IS_FP8:  # FlashAttention-3's per-(batch, KV head) descales
        dbase = Descale + b * (num_heads // kv_group) + hk
        qk_scale = qk_scale * gl.load(dbase) * gl.load(dbase + stride_desc)
        out_scale = gl.load(dbase + 2 * stride_desc)

    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [K_STAGES] + k_desc.block_type.shape,
                                       k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [V_STAGES] + v_desc.block_type.shape,
                                       v_desc.layout)
    if o_desc.dtype == dtype:  # O's staging reuses Q's tiles (Q is dead by then)
        o_smem = q_smem
    else:  # FP8 in, bf16 out
        o_smem = gl.allocate_shared_memory(o_desc.dtype, [2] + o_desc.block_type.shape,
                                           o_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    k_full, k_empty = _ring_barriers(K_STAGES)
    v_full, v_empty = _ring_barriers(V_STAGES)

    consumer_args = (o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_full, k_empty, v_full,
                     v_empty, Lse)
    tail = (b, h, m0, n_tiles, n_full, diag, seqlen_q, seqlen_k, qk_scale, out_scale,
            stride_lb, stride_lh)
    gl.warp_specialize([
        (_consumer, consumer_args + (gl.to_tensor(0), ) + tail),
        (_consumer, consumer_args + (gl.to_tensor(1), ) + tail),
        (_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_full, k_empty,
                   v_full, v_empty, b, h, hk, m0, n_tiles)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


_fwd_launch = CachedKernel(_fwd_kernel)


@gluon.jit
def _ring_barriers(STAGES: gl.constexpr):
    """A ring's "full" (the loader's TMA landed) and "empty" (both consumers are done
    with the slot) mbarriers."""
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrive per consumer warpgroup
    return full, empty


@gluon.jit
def _wait_pv(acc, pv, IS_FP8: gl.constexpr):
    """Wait for the P.V wgmma. P's registers are a dependency too (they must outlive the
    read), except for FP8, whose 8-bit registers the wait cannot carry in Triton 3.6:
    there ptxas alone orders the reuse."""
    if IS_FP8:
        acc = warpgroup_mma_wait(0, deps=[acc])
    else:
        acc, pv = warpgroup_mma_wait(0, deps=[acc, pv])
    return acc


@gluon.jit
def _p_operand(p, dtype: gl.constexpr, p_layout: gl.constexpr):
    """P (fp32, score-tile layout) as the register A operand of P.V. FP8: key columns
    reordered within each 16 exactly as `forward._permute_keys` does in the Triton
    kernel, so that the accumulator registers already sit where the 8-bit operand wants
    them, no shuffles; `layout.transposed_v` stores V^T's keys in the same order."""
    ROWS: gl.constexpr = p.shape[0]
    BLOCK_N: gl.constexpr = p.shape[1]
    p = p.to(dtype)
    if dtype.is_fp8():
        p = gl.reshape(p, [ROWS, BLOCK_N // 16, 2, 2, 2, 2])  # [.., b3, b2, b1, b0]
        p = gl.permute(p, [0, 1, 3, 4, 2, 5])  # [.., b2, b1, b3, b0]
        p = gl.reshape(p, [ROWS, BLOCK_N])
    return gl.convert_layout(p, p_layout)


@gluon.jit
def _kt(k_tile, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """K^T view of a [1, BLOCK_N, 1, D] K tile: wgmma's B operand."""
    return k_tile.reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))


@gluon.jit
def _v_operand(v_tile, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, V_T: gl.constexpr):
    """V as wgmma's B operand [BLOCK_N, D]: a K-major view of V^T for FP8."""
    if V_T:
        return v_tile.reshape([HEAD_DIM, BLOCK_N]).permute((1, 0))
    else:
        return v_tile.reshape([BLOCK_N, HEAD_DIM])


ROWS = 64  # query rows per consumer warpgroup

# (dtype class, head dim) -> (key tile, K ring slots, V ring slots, consumer / loader
# registers). The query block is always 2 x 64 rows (two consumer warpgroups); 16-bit O is
# staged in Q's tiles. d128: 128-key tiles with three slots per ring and 240 consumer
# registers (no spills) won by 15-20% over 64-key tiles (benchmarks/NOTES.md, session 6).
CONFIGS = {
    ("16bit", 64): (128, 3, 3, 232, 40),
    ("16bit", 128): (128, 3, 3, 240, 24),
    ("fp8", 64): (128, 3, 3, 232, 40),
    ("fp8", 128): (128, 3, 3, 240, 24),
    # d256: O (128 registers) leaves room for 64-key tiles only at 16 bits; two slots per
    # ring fill 192 KB (three K slots tied, session 13). FP8's 128-key tiles take 224 KB
    # (bf16 O staging included) and beat 64-key ones by 9-20% (session 14).
    ("16bit", 256): (64, 2, 2, 240, 24),
    ("fp8", 256): (128, 2, 2, 240, 24),
}
SHARED_BYTES = 232448  # sm_90's most dynamic shared memory per CTA


def shared_bytes(dtype_class: str, head_dim: int, row: tuple) -> int:
    """Shared memory a CONFIGS row allocates (Q, the rings, FP8's bf16 O staging)."""
    block_n, k_stages, v_stages = row[:3]
    width = 1 if dtype_class == "fp8" else 2
    q_bytes = 2 * ROWS * head_dim * width
    o_bytes = 2 * ROWS * head_dim * 2 if dtype_class == "fp8" else 0
    return q_bytes + o_bytes + (k_stages + v_stages) * block_n * head_dim * width


# Rows of CONFIGS the dispatch uses: where this kernel beat the Triton one (H200, same
# process): 16-bit d128, +1-16% (causal 1k-2k most); 16-bit d256 with the split rings,
# +34-43% (NOTES.md session 13); FP8 d256 with 128-key tiles, +12-19% at 4k-16k (session
# 14). At d64 it ties at 16k and is 3-26% slower below (1k causal the most); FP8 d64 /
# d128 tie or lose.
ENABLED = {("16bit", 128), ("16bit", 256), ("fp8", 256)}
# Below this the call is host-bound and either kernel does (the Triton one's pointer
# loads, cheapest to launch). It was 1e11 while this launch built its descriptors through
# Gluon's validating dataclass; with them built directly and the launch cache
# (launcher.py), d128 1k causal x 16 went 280 -> 370 TFLOP/s (NOTES.md session 10).
MIN_FLOPS = TMA_MIN_FLOPS


def _row(dtype: torch.dtype, head_dim: int) -> tuple[str, int]:
    return ("fp8" if dtype == torch.float8_e4m3fn else "16bit", head_dim)


def supports(q, k, v, *, softmax_scale, window_left, window_right, softcap, alibi_slopes,
             dropout_p) -> bool:
    """True when this kernel can run the call: see the module doc for the scope."""
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float8_e4m3fn):
        return False
    if _row(q.dtype, q.shape[-1]) not in ENABLED:
        return False
    return dense_call_ok(q, k, (q, k, v), softmax_scale=softmax_scale,
                         window_left=window_left, window_right=window_right, softcap=softcap,
                         alibi_slopes=alibi_slopes, dropout_p=dropout_p, min_flops=MIN_FLOPS)


def attention_forward(q, k, v, out, lse, *, softmax_scale: float, causal: bool,
                      descale=None):
    """Fill out and lse (what `forward.attention_forward` allocated) for a call
    `supports` accepted. q, k, v, out: (B, S, H, D); lse (B, H, Sq) fp32. FP8: descale
    fp32 (3, B, Hk); V is transposed here, keys in `_p_operand`'s order."""
    is_fp8 = q.dtype == torch.float8_e4m3fn
    config = CONFIGS[_row(q.dtype, q.shape[-1])]
    key = (config, q.dtype, q.shape, k.shape, causal, softmax_scale, lse.stride())
    plan = _PLANS.get(key) or _PLANS.add(key, _plan(q, k, lse, config, softmax_scale, causal))
    q_box, kv_box, vt_box = plan.boxes
    if is_fp8:  # (B, Hk, D, S rounded up to 16)
        v_desc = descriptor(transposed_v(v, permute_keys=True)[1], vt_box)
    else:
        v_desc = descriptor(v, kv_box)
    plan.launch(descriptor(q, q_box), descriptor(k, kv_box), v_desc, descriptor(out, q_box),
                lse, descale if is_fp8 else lse)


class _Plan(NamedTuple):
    launch: BoundLaunch
    boxes: tuple  # TMA block shapes: q / out, k / v, FP8's transposed v


def _plan(q, k, lse, config, softmax_scale: float, causal: bool) -> _Plan:
    """The launch for these shapes, dtype, options and config row (memoised on them)."""
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, kv_heads = k.shape[1], k.shape[2]
    block_n, k_stages, v_stages, consumer_regs, loader_regs = config
    grid = (-(-seqlen_q // (2 * ROWS)), *batch_head_grid(batch, num_heads))
    trailing = (lse.stride(0), lse.stride(1), batch * kv_heads, num_heads, num_heads // kv_heads,
                seqlen_q, seqlen_k, softmax_scale * LOG2E)
    launch = _fwd_launch.bind(grid, trailing, dict(
        HEAD_DIM=head_dim, BLOCK_N=block_n, K_STAGES=k_stages, V_STAGES=v_stages,
        CAUSAL=causal, IS_FP8=q.dtype == torch.float8_e4m3fn, LONGEST_FIRST=causal,
        CONSUMER_REGS=consumer_regs, LOADER_REGS=loader_regs, num_warps=4))
    return _Plan(launch, ([1, ROWS, 1, head_dim], [1, block_n, 1, head_dim],
                          [1, 1, head_dim, block_n]))


_PLANS = PlanCache()
