"""FlashAttention-2 backward pass in Triton: three kernels, no atomics. (Dense 16-bit
d64 / d128 / d256 calls on Hopper take the Gluon kernel in backward_hopper.py instead, unless
`deterministic`: see `attention_backward`.)

1. `_bwd_preprocess`: Delta[i] = sum_d dO[i, d] * O[i, d] (fp32, LSE layout).
2. `_bwd_dkdv_kernel`: one program per (key block, batch * KV head). It keeps K, V
   and fp32 dK/dV accumulators resident, then for each of the H / Hk query heads
   of its GQA group streams the Q / dO tiles of the query band that sees its keys.
   The group's contributions are summed in registers, so dK/dV need no atomics.
3. `_bwd_dq_kernel`: one program per (query block, batch * head), streaming the
   K / V tiles of its key band, exactly like the forward pass.

Every output element is produced by one program in a fixed order, so gradients
are bitwise reproducible. The P tile is recomputed from the stored LSE; masks,
softcap, ALiBi, dropout and band skipping reuse the forward's helpers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import backward_hopper
from .common import (LOAD_DESC, LOAD_PTR64, LOG2E, allowed_tile, any_allowed, band_bounds, batch_head, descriptor_ok,
                     descriptors_pay, dot_precision, dropout_keep, head_scalars, launch_scalars,
                     load_block, make_descriptor, pointer_mode, probs_tile, query_block,
                     seq_strides, store_tile)
from .config import (batch_head_grid, cdiv, get_config, interpreter_active,
                     padded_head_dim)
from .forward import _seq_bounds
from .launcher import BoundLaunch, CachedKernel, PlanCache, on_tensors_device


@triton.jit
def _bwd_preprocess(Out, DOut, Lse, Delta, Lse2, DQAcc, CuSeqQ,
                    stride_ob, stride_os, stride_oh, stride_db, stride_ds, stride_dh,
                    stride_lb, stride_lh, stride_sb, stride_sh, num_heads, seqlen_q, padded_len,
                    HEAD_DIM: tl.constexpr, IS_VARLEN: tl.constexpr, STATS: tl.constexpr,
                    ZERO_DQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Delta[i] = sum_d dO[i, d] O[i, d] (fp32) at Delta + b * stride_sb + h * stride_sh.
    STATS (the Gluon backward's row statistics, `hopper_row_stats`): also Lse2 = LSE in
    log2 units, +inf where LSE is -inf (so P = 0), at Delta's offsets; rows from S up to
    padded_len get 0 in both (their Q and dO tiles read as zeros there). ZERO_DQ: also
    zero the same rows of the dense (B, S, H, HEAD_DIM) fp32 dQ buffer DQAcc, which the
    Gluon backward then adds into (a launch fewer than a memset of its own; measured
    neutral on the GPU, NOTES.md session 12)."""
    pid_m = tl.program_id(0)
    bh = batch_head()
    b = bh // num_heads
    h = bh % num_heads
    q_start, sq = _seq_bounds(CuSeqQ, b, seqlen_q, IS_VARLEN)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < sq) & (offs_d[None, :] < HEAD_DIM)
    b64 = b.to(tl.int64)
    o = tl.load(Out + b64 * stride_ob + q_start * stride_os + h.to(tl.int64) * stride_oh
                + rows[:, None].to(tl.int64) * stride_os + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(DOut + b64 * stride_db + q_start * stride_ds + h.to(tl.int64) * stride_dh
                 + rows[:, None].to(tl.int64) * stride_ds + offs_d[None, :], mask=mask,
                 other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # [BLOCK_M]
    offs = b64 * stride_sb + h * stride_sh + q_start + rows
    stored = rows < sq
    if STATS:
        stored = rows < padded_len
        lse = tl.load(Lse + b64 * stride_lb + h * stride_lh + rows, mask=rows < sq, other=0.0)
        tl.store(Lse2 + offs, tl.where(lse == float("-inf"), float("inf"), lse * LOG2E),
                 mask=stored)
    tl.store(Delta + offs, delta, mask=stored)
    if ZERO_DQ:
        acc_rows = (b64 * seqlen_q + rows) * num_heads + h
        tl.store(DQAcc + acc_rows[:, None] * HEAD_DIM + offs_d[None, :],
                 tl.zeros([BLOCK_M, BLOCK_D], tl.float32), mask=mask)


_preprocess_launch = CachedKernel(_bwd_preprocess)


@triton.jit
def _load_row_stats(Lse, Delta, lse_off, rows, seqlen_q):
    """LSE in log2 units (+inf for rows that saw no key, so P = 0 there) and Delta."""
    lse = tl.load(Lse + lse_off + rows, mask=rows < seqlen_q, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = tl.load(Delta + lse_off + rows, mask=rows < seqlen_q, other=0.0)
    return lse2, delta


@triton.jit
def _add_dq(DQAcc, dq, acc_row0, m, rows, offs_d, h, num_heads, seqlen_q,
            DQ_MODE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """DQAcc[acc_row0 + rows, h, :] += dq (fp32 accumulator, contiguous)."""
    if DQ_MODE == 2:  # rows past the item add exact zeros (P = 0 there)
        DQAcc.atomic_add([acc_row0 + m, h, 0], dq.reshape(BLOCK_M, 1, BLOCK_D))
    else:
        row = (acc_row0 + rows).to(tl.int64) * num_heads + h
        tl.atomic_add(DQAcc + row[:, None] * BLOCK_D + offs_d[None, :], dq,
                      mask=rows[:, None] < seqlen_q, sem="relaxed")


@triton.jit
def _dkdv_inner(dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta,
                lse_off, DQAcc, acc_row0, num_heads, m_start, m_stop, seqlen_q, seqlen_k,
                window_left, window_right, score_mul, cap_mul, alibi_mul, seed, bh, max_seqlen_k,
                dropout_p, mask_base, stride_mq, stride_mk,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
                HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
                DQ_MODE: tl.constexpr, HAS_MASK: tl.constexpr):
    """Add the query tiles [m_start, m_stop) of one head to dK, dV (transposed tiles);
    with HAS_MASK, tiles the caller's attn_mask hides entirely are skipped.

    DQ_MODE > 0: also add dS K of each tile into the fp32 dQ accumulator, an
    (rows, H, BLOCK_D) buffer whose row acc_row0 + i is query i of this item, with
    atomic adds (1) or the copy engine's reduce-add through a descriptor (2): 5
    matmuls per tile instead of 7 across two kernels, at the price of a summation
    order that varies from run to run.
    """
    offs_m = tl.arange(0, BLOCK_M)
    for m in range(m_start, m_stop, BLOCK_M):
        rows = m + offs_m  # [BLOCK_M] query indices
        if HAS_MASK:
            allowed_t = allowed_tile(mask_base, stride_mq, stride_mk, rows[None, :],
                                     cols[:, None], seqlen_q, seqlen_k)  # [BLOCK_N, BLOCK_M]
            if any_allowed(allowed_t):
                dk, dv = _dkdv_tile(
                    dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta,
                    lse_off, DQAcc, acc_row0, num_heads, m, rows, seqlen_q, seqlen_k,
                    window_left, window_right, score_mul, cap_mul, alibi_mul, seed, bh,
                    max_seqlen_k, dropout_p, allowed_t, HEAD_DIM, BLOCK_M, BLOCK_D, MASKED,
                    HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, DQ_MODE, HAS_MASK)
        else:  # (`rows` stands in for the absent mask tile, never read)
            dk, dv = _dkdv_tile(
                dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta,
                lse_off, DQAcc, acc_row0, num_heads, m, rows, seqlen_q, seqlen_k,
                window_left, window_right, score_mul, cap_mul, alibi_mul, seed, bh,
                max_seqlen_k, dropout_p, rows, HEAD_DIM, BLOCK_M, BLOCK_D, MASKED,
                HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, DQ_MODE, HAS_MASK)
    return dk, dv


@triton.jit
def _dkdv_tile(dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta,
               lse_off, DQAcc, acc_row0, num_heads, m, rows, seqlen_q, seqlen_k,
               window_left, window_right, score_mul, cap_mul, alibi_mul, seed, bh, max_seqlen_k,
               dropout_p, allowed_t,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
               MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
               DQ_MODE: tl.constexpr, HAS_MASK: tl.constexpr):
    """One query tile (queries `rows`, starting at m) added to dK, dV (and dQ)."""
    offs_d = tl.arange(0, BLOCK_D)
    # 1. load Q, dO tiles and the row statistics                      # [BLOCK_M, BLOCK_D]
    q = load_block(q_src, stride_qs, b, h, m, rows, offs_d, seqlen_q, HEAD_DIM, MASKED,
                   LOADS, BLOCK_M, BLOCK_D)
    do = load_block(do_src, stride_ds, b, h, m, rows, offs_d, seqlen_q, HEAD_DIM, MASKED,
                    LOADS, BLOCK_M, BLOCK_D)
    lse2, delta = _load_row_stats(Lse, Delta, lse_off, rows, seqlen_q)
    # 2. recompute P^T from the scores and the stored LSE              # [BLOCK_N, BLOCK_M]
    qk_t = tl.dot(k, tl.trans(q), input_precision=PRECISION)
    p_t, t_t = probs_tile(qk_t, rows[None, :], cols[:, None], lse2[None, :], seqlen_q,
                          seqlen_k, window_left, window_right, score_mul, cap_mul,
                          alibi_mul, allowed_t, HAS_SOFTCAP, HAS_ALIBI, MASKED, HAS_MASK)
    # 3. dV += (dropped, rescaled P)^T dO; dP^T = V dO^T
    dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
    if HAS_DROPOUT:
        keep = dropout_keep(seed, bh, rows[None, :], cols[:, None], max_seqlen_k, dropout_p)
        inv_keep = 1.0 / (1.0 - dropout_p)
        pd_t = tl.where(keep, p_t * inv_keep, 0.0)
        dp_t = tl.where(keep, dp_t * inv_keep, 0.0)
    else:
        pd_t = p_t
    dv = tl.dot(pd_t.to(do.dtype), do, dv, input_precision=PRECISION)
    # 4. dS^T = P^T (dP^T - Delta), through the softcap's tanh; dK += dS^T Q
    ds_t = p_t * (dp_t - delta[None, :])
    if HAS_SOFTCAP:
        ds_t = ds_t * (1.0 - t_t * t_t)
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    if DQ_MODE > 0:
        dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=PRECISION)
        _add_dq(DQAcc, dq, acc_row0, m, rows, offs_d, h, num_heads, seqlen_q, DQ_MODE,
                BLOCK_M, BLOCK_D)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DOut, Lse, Delta, DK, DV, DQAcc, CuSeqQ, CuSeqK, Alibi, Seed, Mask,
                     stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                     stride_vb, stride_vs, stride_vh, stride_db, stride_ds, stride_dh,
                     stride_dkb, stride_dks, stride_dkh, stride_dvb, stride_dvs, stride_dvh,
                     stride_lb, stride_lh, stride_ab, stride_ah,
                     stride_mb, stride_mh, stride_mq, stride_mk, num_heads, kv_heads, kv_group, seqlen_q, seqlen_k, max_seqlen_k,
                     window_left, window_right, score_mul, cap_mul, grad_scale, dropout_p,
                     HEAD_DIM: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                     HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     LOADS: tl.constexpr, DQ_MODE: tl.constexpr, HAS_MASK: tl.constexpr):
    """Q, K, V, DOut are pointers, or (B, S, H, D) tensor descriptors when
    LOADS == LOAD_DESC."""
    pid_n = tl.program_id(0)
    bhk = batch_head()
    b = bhk // kv_heads
    hk = bhk % kv_heads
    q_start, sq = _seq_bounds(CuSeqQ, b, seqlen_q, IS_VARLEN)
    k_start, sk = _seq_bounds(CuSeqK, b, seqlen_k, IS_VARLEN)
    n0 = pid_n * BLOCK_N
    if n0 >= sk:
        return

    cols = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N] key indices within the item
    offs_d = tl.arange(0, BLOCK_D)
    b64 = b.to(tl.int64)
    if LOADS != LOAD_DESC:
        K = K + b64 * stride_kb + k_start * stride_ks + hk.to(tl.int64) * stride_kh
        V = V + b64 * stride_vb + k_start * stride_vs + hk.to(tl.int64) * stride_vh
    k = load_block(K, stride_ks, b, hk, n0, cols, offs_d, sk, HEAD_DIM, True, LOADS,
                   BLOCK_N, BLOCK_D)  # [BLOCK_N, BLOCK_D]
    v = load_block(V, stride_vs, b, hk, n0, cols, offs_d, sk, HEAD_DIM, True, LOADS,
                   BLOCK_N, BLOCK_D)
    seed = 0
    if HAS_DROPOUT:
        seed = tl.load(Seed)

    # Query band that sees these keys (mirror image of the forward's key band).
    last_col = tl.minimum(n0 + BLOCK_N, sk) - 1
    m_begin, m_full_lo, m_full_hi, m_end = band_bounds(
        n0, last_col, sq, sq - sk - window_right, sq - sk + window_left, BLOCK_M)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    acc_row0 = (b * seqlen_q + q_start).to(tl.int32)  # varlen: seqlen_q = 0
    for g in range(0, kv_group):
        # Each query head of the GQA group adds its share into the same accumulators.
        h = hk * kv_group + g
        bh = b * num_heads + h
        if LOADS == LOAD_DESC:
            q_src = Q
            do_src = DOut
        else:
            q_src = Q + b64 * stride_qb + q_start * stride_qs + h.to(tl.int64) * stride_qh
            do_src = DOut + b64 * stride_db + q_start * stride_ds + h.to(tl.int64) * stride_dh
        lse_off = b64 * stride_lb + h * stride_lh + q_start
        mask_base = Mask + b64 * stride_mb + h.to(tl.int64) * stride_mh
        alibi_mul = 0.0
        if HAS_ALIBI:
            alibi_mul = tl.load(Alibi + b * stride_ab + h * stride_ah) * LOG2E
        dk, dv = _dkdv_inner(
            dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta, lse_off,
            DQAcc, acc_row0, num_heads,
            m_begin, m_full_lo, sq, sk, window_left, window_right, score_mul, cap_mul,
            alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
            HEAD_DIM, BLOCK_M, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION,
            LOADS, DQ_MODE, HAS_MASK)
        dk, dv = _dkdv_inner(
            dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta, lse_off,
            DQAcc, acc_row0, num_heads,
            m_full_lo, m_full_hi, sq, sk, window_left, window_right, score_mul, cap_mul,
            alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
            HEAD_DIM, BLOCK_M, BLOCK_D, False, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION,
            LOADS, DQ_MODE, HAS_MASK)
        dk, dv = _dkdv_inner(
            dk, dv, k, v, cols, q_src, do_src, stride_qs, stride_ds, b, h, Lse, Delta, lse_off,
            DQAcc, acc_row0, num_heads,
            m_full_hi, m_end, sq, sk, window_left, window_right, score_mul, cap_mul,
            alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
            HEAD_DIM, BLOCK_M, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION,
            LOADS, DQ_MODE, HAS_MASK)

    # dS was taken w.r.t. the scaled score: the softmax scale is applied once here.
    dk = dk * grad_scale
    hk64 = hk.to(tl.int64)
    store_tile(DK + b64 * stride_dkb + k_start * stride_dks + hk64 * stride_dkh, stride_dks,
               cols, offs_d, sk, dk, HEAD_DIM, LOADS == LOAD_PTR64)
    store_tile(DV + b64 * stride_dvb + k_start * stride_dvs + hk64 * stride_dvh, stride_dvs,
               cols, offs_d, sk, dv, HEAD_DIM, LOADS == LOAD_PTR64)


_dkdv_launch = CachedKernel(_bwd_dkdv_kernel)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, rows, k_src, v_src, stride_ks, stride_vs, b, hk,
              n_start, n_stop, seqlen_q, seqlen_k, window_left, window_right,
              score_mul, cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base,
              stride_mq, stride_mk,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
              HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
              HAS_MASK: tl.constexpr):
    """Add the key tiles [n_start, n_stop) to dQ (with HAS_MASK, tiles the caller's
    attn_mask hides entirely are skipped)."""
    offs_n = tl.arange(0, BLOCK_N)
    for n in range(n_start, n_stop, BLOCK_N):
        cols = n + offs_n  # [BLOCK_N] key indices
        if HAS_MASK:
            allowed = allowed_tile(mask_base, stride_mq, stride_mk, rows[:, None], cols[None, :],
                                   seqlen_q, seqlen_k)
            if any_allowed(allowed):
                dq = _dq_tile(dq, q, do, lse2, delta, rows, k_src, v_src, stride_ks, stride_vs,
                              b, hk, n, cols, seqlen_q, seqlen_k, window_left, window_right,
                              score_mul, cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p,
                              allowed, HEAD_DIM, BLOCK_N, BLOCK_D, MASKED, HAS_SOFTCAP,
                              HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, HAS_MASK)
        else:  # (`cols` stands in for the absent mask tile, never read)
            dq = _dq_tile(dq, q, do, lse2, delta, rows, k_src, v_src, stride_ks, stride_vs,
                          b, hk, n, cols, seqlen_q, seqlen_k, window_left, window_right,
                          score_mul, cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p,
                          cols, HEAD_DIM, BLOCK_N, BLOCK_D, MASKED, HAS_SOFTCAP,
                          HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, HAS_MASK)
    return dq


@triton.jit
def _dq_tile(dq, q, do, lse2, delta, rows, k_src, v_src, stride_ks, stride_vs, b, hk, n, cols,
             seqlen_q, seqlen_k, window_left, window_right, score_mul, cap_mul, alibi_mul,
             seed, bh, max_seqlen_k, dropout_p, allowed,
             HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
             HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
             HAS_MASK: tl.constexpr):
    """One key tile (keys `cols`, starting at n) added to dQ."""
    offs_d = tl.arange(0, BLOCK_D)
    # 1. load the K and V tiles                                       # [BLOCK_N, BLOCK_D]
    k = load_block(k_src, stride_ks, b, hk, n, cols, offs_d, seqlen_k, HEAD_DIM, MASKED,
                   LOADS, BLOCK_N, BLOCK_D)
    v = load_block(v_src, stride_vs, b, hk, n, cols, offs_d, seqlen_k, HEAD_DIM, MASKED,
                   LOADS, BLOCK_N, BLOCK_D)
    # 2. recompute P from the scores and the stored LSE                # [BLOCK_M, BLOCK_N]
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    p, t = probs_tile(qk, rows[:, None], cols[None, :], lse2[:, None], seqlen_q, seqlen_k,
                      window_left, window_right, score_mul, cap_mul, alibi_mul, allowed,
                      HAS_SOFTCAP, HAS_ALIBI, MASKED, HAS_MASK)
    # 3. dP = dO V^T, through the same dropout mask as the forward
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
    if HAS_DROPOUT:
        keep = dropout_keep(seed, bh, rows[:, None], cols[None, :], max_seqlen_k, dropout_p)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    # 4. dS = P (dP - Delta), through the softcap's tanh; dQ += dS K
    ds = p * (dp - delta[:, None])
    if HAS_SOFTCAP:
        ds = ds * (1.0 - t * t)
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)  # [BLOCK_M, BLOCK_D]


@triton.jit
def _bwd_dq_kernel(Q, K, V, DOut, Lse, Delta, DQ, CuSeqQ, CuSeqK, Alibi, Seed, Mask,
                   stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                   stride_vb, stride_vs, stride_vh, stride_db, stride_ds, stride_dh,
                   stride_dqb, stride_dqs, stride_dqh, stride_lb, stride_lh, stride_ab, stride_ah,
                   stride_mb, stride_mh, stride_mq, stride_mk, num_heads, kv_group, seqlen_q, seqlen_k, max_seqlen_k,
                   window_left, window_right, score_mul, cap_mul, grad_scale, dropout_p,
                   HEAD_DIM: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                   HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   LOADS: tl.constexpr, LONGEST_FIRST: tl.constexpr, HAS_MASK: tl.constexpr):
    """Q, K, V, DOut are pointers, or (B, S, H, D) tensor descriptors when
    LOADS == LOAD_DESC."""
    pid_m = query_block(LONGEST_FIRST)
    bh = batch_head()
    b = bh // num_heads
    h = bh % num_heads
    hk = h // kv_group
    q_start, sq = _seq_bounds(CuSeqQ, b, seqlen_q, IS_VARLEN)
    k_start, sk = _seq_bounds(CuSeqK, b, seqlen_k, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:
        return

    rows = m0 + tl.arange(0, BLOCK_M)  # [BLOCK_M] query indices within the item
    offs_d = tl.arange(0, BLOCK_D)
    b64 = b.to(tl.int64)
    if LOADS != LOAD_DESC:
        Q = Q + b64 * stride_qb + q_start * stride_qs + h.to(tl.int64) * stride_qh
        DOut = DOut + b64 * stride_db + q_start * stride_ds + h.to(tl.int64) * stride_dh
        K = K + b64 * stride_kb + k_start * stride_ks + hk.to(tl.int64) * stride_kh
        V = V + b64 * stride_vb + k_start * stride_vs + hk.to(tl.int64) * stride_vh
    q = load_block(Q, stride_qs, b, h, m0, rows, offs_d, sq, HEAD_DIM, True, LOADS,
                   BLOCK_M, BLOCK_D)  # [BLOCK_M, BLOCK_D]
    do = load_block(DOut, stride_ds, b, h, m0, rows, offs_d, sq, HEAD_DIM, True, LOADS,
                    BLOCK_M, BLOCK_D)
    lse2, delta = _load_row_stats(Lse, Delta, b64 * stride_lb + h * stride_lh + q_start, rows, sq)
    alibi_mul, seed = head_scalars(Alibi, stride_ab, stride_ah, b, h, Seed, HAS_ALIBI,
                                   HAS_DROPOUT)
    mask_base = Mask + b64 * stride_mb + h.to(tl.int64) * stride_mh

    # Same key band and tile classes as the forward pass.
    last_row = tl.minimum(m0 + BLOCK_M, sq) - 1
    n_begin, n_full_lo, n_full_hi, n_end = band_bounds(
        m0, last_row, sk, sk - sq - window_left, sk - sq + window_right, BLOCK_N)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _dq_inner(dq, q, do, lse2, delta, rows, K, V, stride_ks, stride_vs, b, hk,
                   n_begin, n_full_lo, sq, sk, window_left, window_right, score_mul, cap_mul,
                   alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq,
                   stride_mk, HEAD_DIM, BLOCK_N, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI,
                   HAS_DROPOUT, PRECISION, LOADS, HAS_MASK)
    dq = _dq_inner(dq, q, do, lse2, delta, rows, K, V, stride_ks, stride_vs, b, hk,
                   n_full_lo, n_full_hi, sq, sk, window_left, window_right, score_mul, cap_mul,
                   alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq,
                   stride_mk, HEAD_DIM, BLOCK_N, BLOCK_D, False, HAS_SOFTCAP, HAS_ALIBI,
                   HAS_DROPOUT, PRECISION, LOADS, HAS_MASK)
    dq = _dq_inner(dq, q, do, lse2, delta, rows, K, V, stride_ks, stride_vs, b, hk,
                   n_full_hi, n_end, sq, sk, window_left, window_right, score_mul, cap_mul,
                   alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq,
                   stride_mk, HEAD_DIM, BLOCK_N, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI,
                   HAS_DROPOUT, PRECISION, LOADS, HAS_MASK)
    dq = dq * grad_scale
    store_tile(DQ + b64 * stride_dqb + q_start * stride_dqs + h.to(tl.int64) * stride_dqh,
               stride_dqs, rows, offs_d, sq, dq, HEAD_DIM, LOADS == LOAD_PTR64)


_dq_launch = CachedKernel(_bwd_dq_kernel)


# Experiment switches for benchmarks/bwd_variants.py: fuse dQ into the dK/dV kernel
# (atomic accumulation: 5 matmuls per tile instead of 7, but 10-15% slower as measured),
# and reduce-add through a TMA descriptor (bulk, one per tile) rather than per element.
FUSED_DQ = False
DQ_REDUCE_TMA = True
# Dense causal / full attention on Hopper takes the Gluon kernel (backward_hopper.py);
# False forces these Triton kernels (benchmarks and tests compare the two).
USE_HOPPER_KERNEL = True


def _preprocess(out, dout, lse, delta, lse2, cu_q, varlen, lse_strides, delta_strides, batch,
                max_seqlen_q, seqlen_q, padded_len, dq_acc=None):
    """Launch `_bwd_preprocess` (STATS when padded_len > 0: lse2 is written too; ZERO_DQ
    when a dQ buffer is given)."""
    cfg = get_config("bwd_pre", out.shape[-1], out.dtype)
    zero_dq = dq_acc is not None
    key = (cfg, varlen, out.shape, out.stride(), dout.stride(), lse_strides, delta_strides,
           batch, max_seqlen_q, seqlen_q, padded_len, zero_dq)
    launch = _PREPROCESS_PLANS.get(key) or _PREPROCESS_PLANS.add(key, _plan_preprocess(
        out, dout, cfg, varlen, lse_strides, delta_strides, batch, max_seqlen_q, seqlen_q,
        padded_len, zero_dq))
    if launch is not _NOTHING:
        launch(out, dout, lse, delta, lse2, delta if dq_acc is None else dq_acc, cu_q)


_PREPROCESS_PLANS = PlanCache()
_NOTHING = object()  # the plan of a launch with no rows


def _plan_preprocess(out, dout, cfg, varlen, lse_strides, delta_strides, batch, max_seqlen_q,
                     seqlen_q, padded_len, zero_dq):
    num_heads, head_dim = out.shape[-2], out.shape[-1]
    rows = max(max_seqlen_q, padded_len)
    if rows <= 0:
        return _NOTHING
    return _preprocess_launch.bind(
        (cdiv(rows, cfg.block_m), *batch_head_grid(batch, num_heads)),
        (*seq_strides(out, varlen), *seq_strides(dout, varlen), *lse_strides, *delta_strides,
         num_heads, seqlen_q, padded_len),
        dict(HEAD_DIM=head_dim, IS_VARLEN=varlen, STATS=padded_len > 0, ZERO_DQ=zero_dq,
             BLOCK_M=cfg.block_m,
             BLOCK_D=padded_head_dim(head_dim), num_warps=cfg.num_warps,
             num_stages=cfg.num_stages))


def hopper_row_stats(out, dout, lse, dq_acc=None):
    """The Gluon backward's row statistics from dense (B, S, H, D) out / dout and the
    forward's (B, H, S) LSE: `backward_hopper.row_stats`' buffer, filled by one
    preprocess launch, which also zeroes the dense fp32 dQ buffer `dq_acc` if given."""
    batch, seqlen_q = out.shape[:2]
    lse = lse.contiguous()
    stats = backward_hopper.row_stats(lse)
    _preprocess(out, dout, lse, stats[:, :, 1], stats[:, :, 0], lse, False, lse.stride()[:2],
                stats.stride()[:2], batch, seqlen_q, seqlen_q, stats.shape[-1], dq_acc)
    return stats


_BACKWARD_PLANS = PlanCache()


class _BackwardPlan(NamedTuple):
    dkdv: BoundLaunch | None  # None: an empty grid, nothing to launch
    dkdv_descriptors: bool  # whether q, k, v, dout go in as TMA descriptors
    dq: BoundLaunch | None  # None: dQ fused into the dK/dV launch, or an empty grid
    dq_descriptors: bool
    block_d: int
    lse_strides: tuple


def _plan_backward(q, k, v, dout, dq, dk, dv, lse, alibi_slopes, cfg_kv, cfg_q, dq_mode: int,
                   dense_ok: bool, *, varlen, batch, max_seqlen_q, max_seqlen_k, softmax_scale,
                   window_left, window_right, softcap, dropout_p,
                   fp32_precision, mask_strides=None) -> _BackwardPlan:
    """Everything about the Triton backward's dK/dV and dQ launches but their tensors,
    from shapes, strides, dtypes, options and the configs (memoised by
    `attention_backward` on exactly those)."""
    num_heads, head_dim = q.shape[-2], q.shape[-1]
    kv_heads = k.shape[-2]
    seqlen_q, seqlen_k = (0, 0) if varlen else (q.shape[1], k.shape[1])
    stride_lb, stride_lh = (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))
    stride_ab, stride_ah = alibi_slopes.stride() if alibi_slopes is not None else (0, 0)
    block_d = padded_head_dim(head_dim)
    common = dict(max_seqlen_k=max_seqlen_k, grad_scale=softmax_scale, dropout_p=dropout_p,
                  HEAD_DIM=head_dim, IS_VARLEN=varlen, HAS_ALIBI=alibi_slopes is not None,
                  HAS_DROPOUT=dropout_p > 0.0, PRECISION=dot_precision(q.dtype, fp32_precision),
                  BLOCK_D=block_d, HAS_MASK=mask_strides is not None,
                  **launch_scalars(softmax_scale=softmax_scale, softcap=softcap,
                                   window_left=window_left, window_right=window_right,
                                   max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k))
    strides_in = (*seq_strides(q, varlen), *seq_strides(k, varlen), *seq_strides(v, varlen),
                  *seq_strides(dout, varlen))
    pointers = pointer_mode(max(max_seqlen_q, max_seqlen_k), q, k, v, dout, dq, dk, dv)

    def loads(cfg):
        # dQ/dK/dV are stored through pointers whatever the loads: spans past 2^31 keep
        # the 64-bit pointer path for the whole kernel.
        if cfg is not None and cfg.tma and dense_ok and pointers != LOAD_PTR64.value:
            return LOAD_DESC.value
        return pointers

    kv_loads, q_loads = loads(cfg_kv), loads(cfg_q)
    dkdv = dq_launch = None
    if max_seqlen_k > 0:
        dkdv = _dkdv_launch.bind(
            (cdiv(max_seqlen_k, cfg_kv.block_n), *batch_head_grid(batch, kv_heads)),
            (*strides_in, *seq_strides(dk, varlen), *seq_strides(dv, varlen), stride_lb,
             stride_lh, stride_ab, stride_ah, *(mask_strides or (0, 0, 0, 0)), num_heads, kv_heads, num_heads // kv_heads,
             seqlen_q, seqlen_k),
            dict(BLOCK_M=cfg_kv.block_m, BLOCK_N=cfg_kv.block_n, LOADS=kv_loads,
                 DQ_MODE=dq_mode, num_warps=cfg_kv.num_warps, num_stages=cfg_kv.num_stages,
                 **common))
    if cfg_q is not None and max_seqlen_q > 0:
        dq_launch = _dq_launch.bind(
            (cdiv(max_seqlen_q, cfg_q.block_m), *batch_head_grid(batch, num_heads)),
            (*strides_in, *seq_strides(dq, varlen), stride_lb, stride_lh, stride_ab, stride_ah,
             *(mask_strides or (0, 0, 0, 0)), num_heads, num_heads // kv_heads, seqlen_q, seqlen_k),
            dict(BLOCK_M=cfg_q.block_m, BLOCK_N=cfg_q.block_n, LOADS=q_loads,
                 LONGEST_FIRST=cfg_q.longest_first, num_warps=cfg_q.num_warps,
                 num_stages=cfg_q.num_stages, **common))
    return _BackwardPlan(dkdv, kv_loads == LOAD_DESC.value, dq_launch,
                         q_loads == LOAD_DESC.value, block_d, (stride_lb, stride_lh))


@on_tensors_device
def attention_backward(dout, q, k, v, out, lse, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                       max_seqlen_k, softmax_scale, window_left, window_right, softcap,
                       alibi_slopes, dropout_p, seed, deterministic: bool = False,
                       fp32_precision: str = "tf32", attn_mask=None):
    """Gradients (dq, dk, dv) of attention_forward, shaped and typed like q, k, v.

    Calls `backward_hopper.supports` accepts (sm_90, dense fp16 / bf16, d64 / d128 / d256,
    causal or full, not ``deterministic``) run the Gluon kernel, which adds dQ up
    with reduce-adds. Otherwise a separate dQ kernel recomputes P and dP per query
    block: every gradient element is reduced by one program in a fixed order, so
    results are bitwise reproducible. (With FUSED_DQ the dK/dV
    kernel also reduce-adds dQ into an fp32 buffer instead, unless deterministic;
    measured slower on the H200, see benchmarks/NOTES.md, so off by default.)
    """
    varlen = cu_seqlens_q is not None
    if varlen:
        batch = cu_seqlens_q.numel() - 1
        num_heads, head_dim = q.shape[1], q.shape[2]
        seqlen_q = seqlen_k = 0  # per item, read from cu_seqlens inside the kernels
        make = torch.zeros  # tokens past cu_seqlens[-1] (if any) get zero gradients
    else:
        batch, seqlen_q, num_heads, head_dim = q.shape
        seqlen_k = k.shape[1]
        make = torch.empty
    dq = make(q.shape, dtype=q.dtype, device=q.device)
    dk = make(k.shape, dtype=k.dtype, device=k.device)
    dv = make(v.shape, dtype=v.dtype, device=v.device)
    lse = lse.contiguous()  # a no-op for the forward's own lse
    if (USE_HOPPER_KERNEL and not varlen and batch > 0 and num_heads > 0 and attn_mask is None
            and backward_hopper.supports(
                q, k, v, dout, softmax_scale=softmax_scale, window_left=window_left,
                window_right=window_right, softcap=softcap, alibi_slopes=alibi_slopes,
                dropout_p=dropout_p, deterministic=deterministic)):
        dq_acc = backward_hopper.dq_buffer(q)
        stats = hopper_row_stats(out, dout, lse, dq_acc)
        backward_hopper.attention_backward(dout, q, k, v, stats, dq_acc, dq, dk, dv,
                                           softmax_scale=softmax_scale,
                                           causal=window_right == 0)
        return dq, dk, dv
    if batch == 0 or num_heads == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    has_alibi = alibi_slopes is not None
    # Per-call decisions (they read experiment switches, the config table and the
    # tensors' alignment) feed the plan's key with everything else `_plan_backward` reads.
    # (dq, dk, dv are fresh contiguous tensors: their strides follow from q's, k's shapes.)
    fuse_dq = FUSED_DQ and not deterministic
    cfg_kv = get_config("bwd_dkdv_dq" if fuse_dq else "bwd_dkdv", head_dim, q.dtype)
    cfg_q = None if fuse_dq else get_config("bwd_dq", head_dim, q.dtype)
    dq_mode = 0
    if fuse_dq:  # (the interpreter has no reduce-add)
        dq_mode = 2 if DQ_REDUCE_TMA and not interpreter_active() else 1
    dense_ok = (not varlen and descriptor_ok(q, k, v, dout)
                and descriptors_pay(batch, num_heads, seqlen_q, seqlen_k, head_dim,
                                    window_right == 0))
    key = (cfg_kv, cfg_q, dq_mode, dense_ok, varlen, batch, max_seqlen_q, max_seqlen_k,
           softmax_scale, window_left, window_right, softcap, dropout_p, fp32_precision,
           q.dtype, q.shape, q.stride(), k.shape, k.stride(), v.stride(), dout.stride(),
           lse.stride(), alibi_slopes.stride() if has_alibi else None,
           None if attn_mask is None else attn_mask.stride())
    plan = _BACKWARD_PLANS.get(key) or _BACKWARD_PLANS.add(key, _plan_backward(
        q, k, v, dout, dq, dk, dv, lse, alibi_slopes, cfg_kv, cfg_q, dq_mode, dense_ok,
        varlen=varlen, batch=batch, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        softmax_scale=softmax_scale, window_left=window_left, window_right=window_right,
        softcap=softcap, dropout_p=dropout_p, fp32_precision=fp32_precision,
        mask_strides=None if attn_mask is None else attn_mask.stride()))
    placeholder = lse  # for the tensors a call does not have (never read)
    alibi = alibi_slopes if has_alibi else placeholder
    seed_t = seed if dropout_p > 0.0 else placeholder
    mask = placeholder if attn_mask is None else attn_mask.view(torch.uint8)
    cu_q, cu_k = (cu_seqlens_q, cu_seqlens_k) if varlen else (placeholder, placeholder)
    block_d = plan.block_d

    def sources(cfg, descriptors: bool):  # q, k, v, dout as pointers or TMA descriptors
        if not descriptors:
            return q, k, v, dout
        return (make_descriptor(q, cfg.block_m, block_d),
                make_descriptor(k, cfg.block_n, block_d), make_descriptor(v, cfg.block_n, block_d),
                make_descriptor(dout, cfg.block_m, block_d))

    # 1. Delta = rowsum(dO * O)
    delta = torch.zeros_like(lse)  # fp32, same layout as lse
    _preprocess(out, dout, lse, delta, delta, cu_q, varlen, plan.lse_strides, plan.lse_strides,
                batch, max_seqlen_q, seqlen_q, 0)
    # 2. dK, dV (and dQ unless deterministic): one program per (key block, batch * KV head)
    dq_acc = dq_acc_arg = placeholder
    if dq_mode:
        rows = q.shape[0] * q.shape[1] if not varlen else q.shape[0]
        dq_acc = dq_acc_arg = torch.zeros((rows, num_heads, block_d), dtype=torch.float32,
                                          device=q.device)
        if dq_mode == 2:
            dq_acc_arg = make_descriptor(dq_acc, cfg_kv.block_m, block_d)
    if plan.dkdv is not None:
        plan.dkdv(*sources(cfg_kv, plan.dkdv_descriptors), lse, delta, dk, dv, dq_acc_arg,
                  cu_q, cu_k, alibi, seed_t, mask)
    if dq_mode:  # dS was taken w.r.t. the scaled score: apply the scale once here
        dq.copy_(dq_acc[..., :head_dim].mul_(softmax_scale).view(q.shape))
        return dq, dk, dv
    # 3. dQ: one program per (query block, batch * head)
    if plan.dq is not None:
        plan.dq(*sources(cfg_q, plan.dq_descriptors), lse, delta, dq, cu_q, cu_k, alibi,
                seed_t, mask)
    return dq, dk, dv

