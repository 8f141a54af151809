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
TMA copies of Q, then K / V tiles into a ring of STAGES shared-memory slots with
"full" mbarriers) and two consumer warpgroups (`_consumer`: 64 query rows each),
which release a slot through its "empty" mbarrier once they are done with it.

Scope (`supports` decides; everything else takes the Triton kernel): dense (B, S, H, D)
inputs on sm_90 with TMA-aligned strides, causal or not (no other window), no softcap /
ALiBi / dropout / probs, softmax_scale > 0, and a (dtype, head dim) row in ENABLED:
fp16 / bf16 at d128 today. The d64 and FP8 (e4m3, d64 / d128) rows compile and pass
the GPU tests but are slower than the Triton kernel, so they are off.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from .common import LN2, LOG2E, transposed_v
from .config import batch_head_grid
from .hopper_common import dense_call_ok, descriptor


@gluon.jit
def _loader(q_desc, k_desc, v_desc, k2_desc, v2_desc, q_smem, k_smem, v_smem, k2_smem,
            v2_smem, q_bar, full, empty, b, h, hk, m0, n_tiles):
    """Producer warp: Q's two halves once, then K / V tiles into the ring. A slot is
    reused once both consumers arrived on its `empty` barrier. (Partitions get their
    compile-time sizes from the buffers' shapes: Triton 3.6 passes only values.)
    A key tile of a size that is not a power of two comes in two parts (k / v, then
    k2 / v2: `_consumer_split`); otherwise k2 / v2 are k / v and unused."""
    STAGES: gl.constexpr = k_smem.shape[0]
    N_A: gl.constexpr = k_smem.shape[2]
    SPLIT: gl.constexpr = k2_smem.shape[2] < N_A
    BLOCK_N: gl.constexpr = N_A + k2_smem.shape[2] if SPLIT else N_A
    V_T: gl.constexpr = q_smem.dtype.is_fp8()
    NBYTES: gl.constexpr = (k_desc.block_type.nbytes + v_desc.block_type.nbytes
                            + (k2_desc.block_type.nbytes + v2_desc.block_type.nbytes
                               if SPLIT else 0))
    half: gl.constexpr = q_desc.block_type.shape[1]
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, m0, h, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [b, m0 + half, h, 0], q_bar, q_smem.index(1))
    for j in range(n_tiles):
        slot = j % STAGES
        mbarrier.wait(empty.index(slot), ((j // STAGES) & 1) ^ 1, pred=j >= STAGES)
        bar = full.index(slot)
        mbarrier.expect(bar, NBYTES)
        _load_kv(k_desc, v_desc, k_smem, v_smem, bar, slot, b, hk, j * BLOCK_N, V_T)
        if SPLIT:
            _load_kv(k2_desc, v2_desc, k2_smem, v2_smem, bar, slot, b, hk, j * BLOCK_N + N_A,
                     V_T)


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, bar, slot, b, hk, n, V_T: gl.constexpr):
    """K and V rows n.. of one KV head into ring slot `slot`, completing on `bar`."""
    tma.async_copy_global_to_shared(k_desc, [b, n, hk, 0], bar, k_smem.index(slot))
    if V_T:  # (B, Hk, D, S) copy of V: keys contiguous, as FP8 P.V needs
        tma.async_copy_global_to_shared(v_desc, [b, hk, 0, n], bar, v_smem.index(slot))
    else:
        tma.async_copy_global_to_shared(v_desc, [b, n, hk, 0], bar, v_smem.index(slot))


@gluon.jit
def _softmax_step(s, m_i, l_i, rows, n, qk_scale, seqlen_k, diag,
                  BLOCK_N: gl.constexpr, MASKED: gl.constexpr, s_layout: gl.constexpr):
    """Online softmax over one score tile s = Q K^T (raw, unscaled; qk_scale > 0 folds
    softmax_scale * log2(e)): returns (P, alpha, m_new, l_new) in base 2."""
    if MASKED:
        s = _masked(s, n, rows, seqlen_k, diag)
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)  # all-masked rows stay at 0
    p = gl.exp2(s * qk_scale - m_ref[:, None])
    alpha = gl.exp2(m_i - m_ref)
    l_new = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_new


@gluon.jit
def _masked(s, n, rows, seqlen_k, diag):
    """s (key n in column 0) with keys past the end, or above the diagonal (query i sees
    keys <= i + diag), set to -inf."""
    layout: gl.constexpr = s.type.layout
    cols = n + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, layout))
    rows = gl.convert_layout(rows, gl.SliceLayout(1, layout))  # (the same rows per thread)
    visible = (cols[None, :] < seqlen_k) & (cols[None, :] <= rows[:, None] + diag)
    return gl.where(visible, s, float("-inf"))


@gluon.jit
def _softmax_step2(s_a, s_b, m_i, l_i, rows, n, qk_scale, seqlen_k, diag,
                   MASKED: gl.constexpr):
    """`_softmax_step` over one key tile held as two score tensors (keys n.. in s_a, the
    next s_b.shape[1] in s_b). Returns (P_a, P_b, alpha, m_new, l_new)."""
    row_layout: gl.constexpr = m_i.type.layout
    row_b: gl.constexpr = gl.SliceLayout(1, s_b.type.layout)
    if MASKED:
        s_a = _masked(s_a, n, rows, seqlen_k, diag)
        s_b = _masked(s_b, n + s_a.shape[1], rows, seqlen_k, diag)
    row_max = gl.maximum(gl.max(s_a, 1), gl.convert_layout(gl.max(s_b, 1), row_layout))
    m_new = gl.maximum(m_i, row_max * qk_scale)
    m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)  # all-masked rows stay at 0
    p_a = gl.exp2(s_a * qk_scale - m_ref[:, None])
    p_b = gl.exp2(s_b * qk_scale - gl.convert_layout(m_ref, row_b)[:, None])
    alpha = gl.exp2(m_i - m_ref)
    l_new = l_i * alpha + gl.sum(p_a, 1) + gl.convert_layout(gl.sum(p_b, 1), row_layout)
    return p_a, p_b, alpha, m_new, l_new


@gluon.jit
def _softmax_tile2(s_a, s_b, m_i, l_i, rows, j, n_full, qk_scale, seqlen_k, diag,
                   BLOCK_N: gl.constexpr):
    """`_softmax_step2` of key tile j, with the mask only where the tile needs one."""
    if j >= n_full:
        p_a, p_b, alpha, m_i, l_i = _softmax_step2(s_a, s_b, m_i, l_i, rows, j * BLOCK_N,
                                                   qk_scale, seqlen_k, diag, True)
    else:
        p_a, p_b, alpha, m_i, l_i = _softmax_step2(s_a, s_b, m_i, l_i, rows, j * BLOCK_N,
                                                   qk_scale, seqlen_k, diag, False)
    return p_a, p_b, alpha, m_i, l_i


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
def _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, full, empty, Lse, wg, b, h,
              m0, n_tiles, n_full, diag, seqlen_q, seqlen_k, qk_scale, out_scale, stride_lb,
              stride_lh):
    """One warpgroup: 64 query rows (half `wg` of the CTA's block), start to finish.
    Query i sees keys <= i + diag (causal; diag = seqlen_k otherwise)."""
    dtype: gl.constexpr = q_smem.dtype
    IS_FP8: gl.constexpr = dtype.is_fp8()
    ROWS: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    STAGES: gl.constexpr = k_smem.shape[0]
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
        mbarrier.wait(full.index(0), 0)
        s = warpgroup_mma(q, _kt(k_smem.index(0), BLOCK_N, HEAD_DIM), s_zero,
                          use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=[s])
        p, alpha, m_i, l_i = _softmax_tile(s, m_i, l_i, rows, 0, n_full, qk_scale, seqlen_k,
                                           diag, BLOCK_N, s_layout)
        for j in range(1, n_tiles):
            slot = j % STAGES
            prev = (j - 1) % STAGES
            mbarrier.wait(full.index(slot), (j // STAGES) & 1)  # V_{j-1} came with K_{j-1}
            pv = _p_operand(p, dtype, p_layout)
            s = warpgroup_mma(q, _kt(k_smem.index(slot), BLOCK_N, HEAD_DIM), s_zero,
                              use_acc=False, is_async=True)
            acc = warpgroup_mma(pv, _v_operand(v_smem.index(prev), BLOCK_N, HEAD_DIM, IS_FP8),
                                acc, is_async=True)
            s = warpgroup_mma_wait(1, deps=[s])  # S_j is ready; P.V may still run
            p, alpha, m_i, l_i = _softmax_tile(s, m_i, l_i, rows, j, n_full, qk_scale,
                                               seqlen_k, diag, BLOCK_N, s_layout)
            acc = _wait_pv(acc, pv, IS_FP8)
            mbarrier.arrive(empty.index(prev), count=1)  # this warpgroup is done with it
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        # The last tile's P.V.
        last = (n_tiles - 1) % STAGES
        pv = _p_operand(p, dtype, p_layout)
        acc = warpgroup_mma(pv, _v_operand(v_smem.index(last), BLOCK_N, HEAD_DIM, IS_FP8),
                            acc, is_async=True)
        acc = _wait_pv(acc, pv, IS_FP8)

    _epilogue(acc, m_i, l_i, rows, o_desc, o_smem.index(wg), Lse, b, h, r0, seqlen_q,
              out_scale, stride_lb, stride_lh)


@gluon.jit
def _epilogue(acc, m_i, l_i, rows, o_desc, o_tile, Lse, b, h, r0, seqlen_q, out_scale,
              stride_lb, stride_lh):
    """Normalise once (rows that saw no key get out = 0 and LSE = -inf), store the LSE and
    O (staged in o_tile, copied out by TMA, clipped at S)."""
    ROWS: gl.constexpr = acc.shape[0]
    HEAD_DIM: gl.constexpr = acc.shape[1]
    empty_row = l_i == 0.0
    inv_l = out_scale / gl.where(empty_row, 1.0, l_i)
    out = acc * gl.convert_layout(inv_l, gl.SliceLayout(1, acc.type.layout))[:, None]
    lse = gl.where(empty_row, float("-inf"),
                   (m_i + gl.log2(gl.where(empty_row, 1.0, l_i))) * LN2)
    gl.store(Lse + b.to(gl.int64) * stride_lb + h * stride_lh + rows, lse, mask=rows < seqlen_q)
    o_tile.reshape([ROWS, HEAD_DIM]).store(out.to(o_desc.dtype))
    fence_async_shared()  # the copy engine reads o_tile next
    tma.async_copy_shared_to_global(o_desc, [b, r0, h, 0], o_tile)
    tma.store_wait(0)


@gluon.jit
def _consumer_split(o_desc, q_smem, k_smem, v_smem, k2_smem, v2_smem, o_smem, q_bar, full,
                    empty, Lse, wg, b, h, m0, n_tiles, n_full, diag, seqlen_q, seqlen_k,
                    qk_scale, out_scale, stride_lb, stride_lh):
    """`_consumer` for a key tile of two parts (N_A + N_B keys, e.g. 128 + 64: Gluon's
    tensors are powers of two): two Q.K^T and two P.V wgmmas per tile, one softmax."""
    dtype: gl.constexpr = q_smem.dtype
    IS_FP8: gl.constexpr = dtype.is_fp8()
    ROWS: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    STAGES: gl.constexpr = k_smem.shape[0]
    N_A: gl.constexpr = k_smem.shape[2]
    N_B: gl.constexpr = k2_smem.shape[2]
    k_width: gl.constexpr = 256 // dtype.primitive_bitwidth
    a_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N_A, k_width])
    b_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N_B, k_width])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, k_width])
    p_layout: gl.constexpr = gl.DotOperandLayout(
        operand_index=0, parent=o_layout, k_width=32 // dtype.primitive_bitwidth)
    row_layout: gl.constexpr = gl.SliceLayout(1, a_layout)

    r0 = m0 + wg * ROWS
    rows = r0 + gl.arange(0, ROWS, layout=row_layout)
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([ROWS], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    zero_a = gl.zeros([ROWS, N_A], gl.float32, layout=a_layout)
    zero_b = gl.zeros([ROWS, N_B], gl.float32, layout=b_layout)
    q = q_smem.index(wg).reshape([ROWS, HEAD_DIM])
    mbarrier.wait(q_bar, 0)

    if n_tiles > 0:
        mbarrier.wait(full.index(0), 0)
        s_a = warpgroup_mma(q, _kt(k_smem.index(0), N_A, HEAD_DIM), zero_a, use_acc=False,
                            is_async=True)
        s_b = warpgroup_mma(q, _kt(k2_smem.index(0), N_B, HEAD_DIM), zero_b, use_acc=False,
                            is_async=True)
        s_a, s_b = warpgroup_mma_wait(0, deps=[s_a, s_b])
        p_a, p_b, alpha, m_i, l_i = _softmax_tile2(s_a, s_b, m_i, l_i, rows, 0, n_full,
                                                   qk_scale, seqlen_k, diag, N_A + N_B)
        for j in range(1, n_tiles):
            slot = j % STAGES
            prev = (j - 1) % STAGES
            mbarrier.wait(full.index(slot), (j // STAGES) & 1)
            pv_a = _p_operand(p_a, dtype, p_layout)
            pv_b = _p_operand(p_b, dtype, p_layout)
            s_a = warpgroup_mma(q, _kt(k_smem.index(slot), N_A, HEAD_DIM), zero_a,
                                use_acc=False, is_async=True)
            s_b = warpgroup_mma(q, _kt(k2_smem.index(slot), N_B, HEAD_DIM), zero_b,
                                use_acc=False, is_async=True)
            acc = _pv_pair(pv_a, pv_b, v_smem.index(prev), v2_smem.index(prev), acc, IS_FP8)
            s_a, s_b = warpgroup_mma_wait(2, deps=[s_a, s_b])  # the two P.V may still run
            p_a, p_b, alpha, m_i, l_i = _softmax_tile2(s_a, s_b, m_i, l_i, rows, j, n_full,
                                                       qk_scale, seqlen_k, diag, N_A + N_B)
            acc = _wait_pv_pair(acc, pv_a, pv_b, IS_FP8)
            mbarrier.arrive(empty.index(prev), count=1)
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        last = (n_tiles - 1) % STAGES
        pv_a = _p_operand(p_a, dtype, p_layout)
        pv_b = _p_operand(p_b, dtype, p_layout)
        acc = _pv_pair(pv_a, pv_b, v_smem.index(last), v2_smem.index(last), acc, IS_FP8)
        acc = _wait_pv_pair(acc, pv_a, pv_b, IS_FP8)

    _epilogue(acc, m_i, l_i, rows, o_desc, o_smem.index(wg), Lse, b, h, r0, seqlen_q,
              out_scale, stride_lb, stride_lh)


@gluon.jit
def _pv_pair(pv_a, pv_b, v_a, v_b, acc, IS_FP8: gl.constexpr):
    """O += P_a V_a + P_b V_b, issued (two wgmma groups)."""
    HEAD_DIM: gl.constexpr = acc.shape[1]
    acc = warpgroup_mma(pv_a, _v_operand(v_a, pv_a.shape[1], HEAD_DIM, IS_FP8), acc,
                        is_async=True)
    return warpgroup_mma(pv_b, _v_operand(v_b, pv_b.shape[1], HEAD_DIM, IS_FP8), acc,
                         is_async=True)


@gluon.jit
def _wait_pv_pair(acc, pv_a, pv_b, IS_FP8: gl.constexpr):
    """`_wait_pv` for the two P.V wgmmas of a split tile."""
    if IS_FP8:
        acc = warpgroup_mma_wait(0, deps=[acc])
    else:
        acc, pv_a, pv_b = warpgroup_mma_wait(0, deps=[acc, pv_a, pv_b])
    return acc


@gluon.jit
def _fwd_kernel(q_desc, k_desc, v_desc, o_desc, Lse, Descale, stride_lb, stride_lh,
                stride_desc, num_heads, kv_group, seqlen_q, seqlen_k, qk_scale,
                HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                CAUSAL: gl.constexpr, IS_FP8: gl.constexpr, LONGEST_FIRST: gl.constexpr,
                CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr, k2_desc, v2_desc,
                SPLIT: gl.constexpr):
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
    k_smem = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape,
                                       k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape,
                                       v_desc.layout)
    k2_smem = k_smem
    v2_smem = v_smem
    if SPLIT:  # the key tile's second part (`_consumer_split`)
        k2_smem = gl.allocate_shared_memory(dtype, [STAGES] + k2_desc.block_type.shape,
                                            k2_desc.layout)
        v2_smem = gl.allocate_shared_memory(dtype, [STAGES] + v2_desc.block_type.shape,
                                            v2_desc.layout)
    if o_desc.dtype == dtype:  # O's staging reuses Q's tiles: room for a third K/V slot
        o_smem = q_smem
    else:  # FP8 in, bf16 out
        o_smem = gl.allocate_shared_memory(o_desc.dtype, [2] + o_desc.block_type.shape,
                                           o_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrive per consumer warpgroup

    tail = (b, h, m0, n_tiles, n_full, diag, seqlen_q, seqlen_k, qk_scale, out_scale,
            stride_lb, stride_lh)
    loader_args = (q_desc, k_desc, v_desc, k2_desc, v2_desc, q_smem, k_smem, v_smem, k2_smem,
                   v2_smem, q_bar, full, empty, b, h, hk, m0, n_tiles)
    if SPLIT:
        args = (o_desc, q_smem, k_smem, v_smem, k2_smem, v2_smem, o_smem, q_bar, full, empty,
                Lse)
        gl.warp_specialize([
            (_consumer_split, args + (gl.to_tensor(0), ) + tail),
            (_consumer_split, args + (gl.to_tensor(1), ) + tail),
            (_loader, loader_args),
        ], [4, 1], [CONSUMER_REGS, LOADER_REGS])
    else:
        args = (o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, full, empty, Lse)
        gl.warp_specialize([
            (_consumer, args + (gl.to_tensor(0), ) + tail),
            (_consumer, args + (gl.to_tensor(1), ) + tail),
            (_loader, loader_args),
        ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


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
    them, no shuffles; `common.transposed_v` stores V^T's keys in the same order."""
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


# (dtype class, head dim) -> (key tile, ring slots, consumer / loader registers). The
# query block is always 2 x 64 rows (two consumer warpgroups).
# d128: 128-key tiles with three slots (O staged in Q's tiles to fit) and 240 consumer
# registers (no spills) won by 15-20% over 64-key tiles (benchmarks/NOTES.md, session 6).
CONFIGS = {
    ("16bit", 64): (128, 3, 232, 40),
    ("16bit", 128): (128, 3, 240, 24),
    ("fp8", 64): (128, 3, 232, 40),
    ("fp8", 128): (128, 3, 240, 24),
    # d256: O (128 registers) leaves room for 64-key tiles only; two slots fill the
    # shared memory (bf16: 197 KB; FP8: 164 KB)
    ("16bit", 256): (64, 2, 240, 24),
    ("fp8", 256): (64, 2, 240, 24),
}
# Rows of CONFIGS the dispatch uses: where this kernel beat the Triton one in
# gluon_ab.py (H200, same process): 16-bit d128, +1-16% (causal 1k-2k most). At d64
# it is 3-10% slower below 8k; FP8 is slower everywhere (the Triton kernel's P needs
# no shuffles: forward._permute_keys).
ENABLED = {("16bit", 128)}
# Below ~0.2 ms of GPU work the call is host-bound, and this launch (four Gluon
# TensorDescriptors, validated in Python) costs the host more than the Triton one: at
# d128 1k tokens x 16 the Triton kernel won by 13-26% (session 6, NOTES.md).
MIN_FLOPS = 1e11
ROWS = 64  # query rows per consumer warpgroup


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
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, kv_heads = k.shape[1], k.shape[2]
    block_n, stages, consumer_regs, loader_regs = CONFIGS[_row(q.dtype, head_dim)]
    is_fp8 = q.dtype == torch.float8_e4m3fn
    q_desc = descriptor(q, [1, ROWS, 1, head_dim])
    # A key tile that is not a power of two (Gluon tensors are) comes in two parts
    n_a = 1 << (block_n.bit_length() - 1)
    n_b = block_n - n_a
    parts = (n_a, n_b or n_a)  # (the second is unused when n_b is 0)
    k_desc, k2_desc = (descriptor(k, [1, n, 1, head_dim]) for n in parts)
    if is_fp8:  # (B, Hk, D, S rounded up to 16)
        vt = transposed_v(v, permute_keys=True)[1]
        v_desc, v2_desc = (descriptor(vt, [1, 1, head_dim, n]) for n in parts)
    else:
        v_desc, v2_desc = (descriptor(v, [1, n, 1, head_dim]) for n in parts)
    o_desc = descriptor(out, [1, ROWS, 1, head_dim])
    grid = (-(-seqlen_q // (2 * ROWS)), *batch_head_grid(batch, num_heads))
    _fwd_kernel[grid](
        q_desc, k_desc, v_desc, o_desc, lse, descale if is_fp8 else lse,
        lse.stride(0), lse.stride(1), batch * kv_heads, num_heads, num_heads // kv_heads,
        seqlen_q, seqlen_k, softmax_scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_N=block_n, STAGES=stages, CAUSAL=causal, IS_FP8=is_fp8,
        LONGEST_FIRST=causal, CONSUMER_REGS=consumer_regs, LOADER_REGS=loader_regs,
        k2_desc=k2_desc, v2_desc=v2_desc, SPLIT=n_b > 0, num_warps=4)
