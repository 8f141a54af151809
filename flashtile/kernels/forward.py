"""FlashAttention-2 forward pass in Triton, plus the kernel behind return_attn_probs.

One program owns one (query block, batch * head) pair: it keeps its Q tile and an
fp32 output accumulator in registers, streams the K/V tiles of the key band that
its rows can see (tiles outside the causal / local window are never loaded),
maintains the running max and normaliser of an online softmax in base 2, and
writes O and the natural-log LSE exactly once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .common import (LN2, LOAD_DESC, LOAD_PTR64, LOG2E, allowed_tile, any_allowed, band_bounds,
                     batch_head, box_descriptor, descriptor_ok, descriptors_pay, dot_precision, dropout_keep, head_scalars,
                     launch_scalars, load_block, load_tile, pointer_mode,
                     query_block, score_tile, seq_strides, store_tile, tile_span,
                     visible_mask)
from . import forward_hopper
from .config import (SHORT_CAUSAL_MAX_ROWS, batch_head_grid, cdiv, get_config,
                     padded_head_dim)
from .launcher import BoundLaunch, CachedKernel, PlanCache, on_tensors_device
from .layout import transposed_v


@triton.jit
def _seq_bounds(cu_seqlens, b, dense_len, IS_VARLEN: tl.constexpr):
    """(first token of item b, its length): from cu_seqlens (varlen) or dense."""
    if IS_VARLEN:
        start = tl.load(cu_seqlens + b)
        length = tl.load(cu_seqlens + b + 1) - start
        start = start.to(tl.int64)
    else:
        start = 0
        length = dense_len
    return start, length


@triton.jit
def _load_vt_tile(vt_base, stride_vs, stride_vd, cols, offs_d, seqlen_k, HEAD_DIM: tl.constexpr,
                  MASKED: tl.constexpr):
    """[BLOCK_D, BLOCK_N] tile of a V stored transposed (stride_vs = 1 along keys)."""
    mask = offs_d[:, None] < HEAD_DIM
    if MASKED:
        mask = mask & (cols[None, :] < seqlen_k)
    return tl.load(vt_base + offs_d[:, None].to(tl.int64) * stride_vd + cols[None, :] * stride_vs,
                   mask=mask, other=0.0)


@triton.jit
def _permute_keys(p, BLOCK_N: tl.constexpr):
    """Columns of P moved so that each thread's P.V accumulator values land where an 8-bit
    wgmma A operand wants them: no shuffles. Within every 16 keys, key bits
    (b3 b2 b1 b0) go to position (b2 b1 b3 b0): the accumulator layout gives a thread
    key bits b1 b2 from its lane, the fp8 A layout wants them at b2 b3. V^T's keys are
    stored in the same order (`layout.transposed_v`), so P.V is unchanged."""
    rows: tl.constexpr = p.shape[0]
    p = p.reshape(rows, BLOCK_N // 16, 2, 2, 2, 2)  # [.., b3, b2, b1, b0]
    p = p.permute(0, 1, 3, 4, 2, 5)  # [.., b2, b1, b3, b0]
    return p.reshape(rows, BLOCK_N)


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
               n_start, n_stop, seqlen_q, seqlen_k, window_left, window_right, score_mul, cap_mul,
               alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
               V_T: tl.constexpr, PLAIN_SCORES: tl.constexpr, P_PERM: tl.constexpr,
               HAS_MASK: tl.constexpr):
    """Fold key tiles [n_start, n_stop) into the running (acc, l_i, m_i).

    MASKED tiles straddle a window edge or the end of the keys; the others are
    fully visible to every row and skip the window mask entirely. With HAS_MASK
    every tile also reads the caller's attn_mask, and tiles it hides are skipped.
    """
    offs_n = tl.arange(0, BLOCK_N)
    n_first, n_last = tile_span(n_start, n_stop, BLOCK_N)
    for n in range(n_first, n_last, BLOCK_N):
        cols = n + offs_n  # [BLOCK_N] key indices
        if HAS_MASK:
            allowed = allowed_tile(mask_base, stride_mq, stride_mk, rows[:, None], cols[None, :],
                                   seqlen_q, seqlen_k)
            if any_allowed(allowed):
                acc, l_i, m_i = _fwd_tile(
                    acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
                    n, cols, seqlen_q, seqlen_k, window_left, window_right, score_mul, cap_mul,
                    alibi_mul, seed, bh, max_seqlen_k, dropout_p, allowed, HEAD_DIM, BLOCK_N,
                    BLOCK_D, MASKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, V_T,
                    PLAIN_SCORES, P_PERM, HAS_MASK)
        else:  # (`cols` stands in for the absent mask tile, never read)
            acc, l_i, m_i = _fwd_tile(
                acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
                n, cols, seqlen_q, seqlen_k, window_left, window_right, score_mul, cap_mul,
                alibi_mul, seed, bh, max_seqlen_k, dropout_p, cols, HEAD_DIM, BLOCK_N,
                BLOCK_D, MASKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS, V_T,
                PLAIN_SCORES, P_PERM, HAS_MASK)
    return acc, l_i, m_i


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
              n, cols, seqlen_q, seqlen_k, window_left, window_right, score_mul, cap_mul,
              alibi_mul, seed, bh, max_seqlen_k, dropout_p, allowed,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
              HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, LOADS: tl.constexpr,
              V_T: tl.constexpr, PLAIN_SCORES: tl.constexpr, P_PERM: tl.constexpr,
              HAS_MASK: tl.constexpr):
    """One key tile (keys `cols`, starting at n) folded into (acc, l_i, m_i)."""
    offs_d = tl.arange(0, BLOCK_D)
    diag_offset = seqlen_k - seqlen_q
    vt_len = (seqlen_k + 15) // 16 * 16 if P_PERM else seqlen_k  # permuted V^T is padded
    # 1. load the K and V tiles                                       # [BLOCK_N, BLOCK_D]
    k = load_block(k_src, stride_ks, b, hk, n, cols, offs_d, seqlen_k, HEAD_DIM, MASKED,
                   LOADS, BLOCK_N, BLOCK_D)
    if V_T:  # V arrives transposed (keys contiguous): fp8 P.V wants it K-major
        if LOADS == LOAD_DESC:  # a (B, Hk, D, S) descriptor
            vt = v_src.load([b, hk, 0, n]).reshape(BLOCK_D, BLOCK_N)
        else:
            vt = _load_vt_tile(v_src, stride_vs, stride_vd, cols, offs_d, vt_len,
                               HEAD_DIM, MASKED)
        v = tl.trans(vt)
    else:
        v = load_block(v_src, stride_vs, b, hk, n, cols, offs_d, seqlen_k, HEAD_DIM,
                       MASKED, LOADS, BLOCK_N, BLOCK_D)
    # 2. scores of this tile in log2 units                             # [BLOCK_M, BLOCK_N]
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    if PLAIN_SCORES:  # s = qk * score_mul with score_mul > 0 is never formed: the row
        s = qk  # max is taken on qk and scaled once per row; exp2's argument is one FMA
    else:
        s, _ = score_tile(qk, rows[:, None], cols[None, :], diag_offset, score_mul,
                          cap_mul, alibi_mul, HAS_SOFTCAP, HAS_ALIBI)
    if MASKED:
        visible = visible_mask(rows[:, None], cols[None, :], seqlen_q, seqlen_k,
                               window_left, window_right)
        s = tl.where(visible, s, float("-inf"))
    if HAS_MASK:
        s = tl.where(allowed, s, float("-inf"))
    # 3. online softmax: new running max, rescale what was accumulated so far
    m_tile = tl.max(s, 1)  # [BLOCK_M]
    if PLAIN_SCORES:
        m_tile = m_tile * score_mul
    m_new = tl.maximum(m_i, m_tile)
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all-masked rows stay at 0
    if PLAIN_SCORES:
        p = tl.exp2(s * score_mul - m_ref[:, None])  # [BLOCK_M, BLOCK_N]
    else:
        p = tl.exp2(s - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    l_i = l_i * alpha + tl.sum(p, 1)  # the normaliser counts dropped entries too
    acc = acc * alpha[:, None]
    m_i = m_new
    # 4. dropout zeroes entries of P (the 1 / (1 - p) is applied at the end)
    if HAS_DROPOUT:
        keep = dropout_keep(seed, bh, rows[:, None], cols[None, :], max_seqlen_k, dropout_p)
        p = tl.where(keep, p, 0.0)
    # 5. acc <- alpha * acc + P V (alpha applied above)               # [BLOCK_M, BLOCK_D]
    p = p.to(v.dtype)
    if P_PERM:  # V^T's keys are stored permuted to match (see _permute_keys)
        p = _permute_keys(p, BLOCK_N)
    acc = tl.dot(p, v, acc, input_precision=PRECISION)
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, Out, Lse, CuSeqQ, CuSeqK, Alibi, Seed, Descale, Mask,
                stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                stride_vb, stride_vs, stride_vh, stride_ob, stride_os, stride_oh,
                stride_lb, stride_lh, stride_ab, stride_ah, stride_vd, stride_desc,
                stride_mb, stride_mh, stride_mq, stride_mk,
                num_heads, kv_group, seqlen_q, seqlen_k, max_seqlen_k,
                window_left, window_right, score_mul, cap_mul, dropout_p,
                HEAD_DIM: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                LOADS: tl.constexpr, IS_FP8: tl.constexpr, V_T: tl.constexpr,
                PLAIN_SCORES: tl.constexpr, P_PERM: tl.constexpr,
                LONGEST_FIRST: tl.constexpr, HAS_MASK: tl.constexpr):
    """Q, K, V, Out are pointers, or (B, S, H, D) tensor descriptors when LOADS == LOAD_DESC
    (dense inputs only: a descriptor's zero fill stops at S, not at an item's end).
    Mask (HAS_MASK, dense only): the caller's (B, H, Sq, Sk) boolean attn_mask as bytes.

    IS_FP8: e4m3 Q, K, V; V_T: V transposed (stride_vd between head-dim rows, keys
    contiguous); Descale is fp32 (3, B, Hk) with stride_desc per (B, Hk) plane, and
    Out is bf16. Scores use q_descale * k_descale, the output v_descale."""
    pid_m = query_block(LONGEST_FIRST)
    bh = batch_head()
    b = bh // num_heads
    h = bh % num_heads
    hk = h // kv_group  # GQA: consecutive query heads share one KV head
    q_start, sq = _seq_bounds(CuSeqQ, b, seqlen_q, IS_VARLEN)
    k_start, sk = _seq_bounds(CuSeqK, b, seqlen_k, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:  # varlen: this item has fewer queries than max_seqlen_q
        return

    rows = m0 + tl.arange(0, BLOCK_M)  # [BLOCK_M] query indices within the item
    offs_d = tl.arange(0, BLOCK_D)
    b64 = b.to(tl.int64)
    if LOADS == LOAD_DESC:
        k_src = K
        v_src = V
    else:
        k_src = K + b64 * stride_kb + k_start * stride_ks + hk.to(tl.int64) * stride_kh
        v_src = V + b64 * stride_vb + k_start * stride_vs + hk.to(tl.int64) * stride_vh
        Q = Q + b64 * stride_qb + q_start * stride_qs + h.to(tl.int64) * stride_qh
    q = load_block(Q, stride_qs, b, h, m0, rows, offs_d, sq, HEAD_DIM, True, LOADS,
                   BLOCK_M, BLOCK_D)  # [BLOCK_M, BLOCK_D]

    alibi_mul, seed = head_scalars(Alibi, stride_ab, stride_ah, b, h, Seed, HAS_ALIBI,
                                   HAS_DROPOUT)
    if IS_FP8:  # FlashAttention-3's per-(batch, KV head) descales
        descale = Descale + b * (num_heads // kv_group) + hk
        score_mul = score_mul * tl.load(descale) * tl.load(descale + stride_desc)
    mask_base = Mask + b64 * stride_mb + h.to(tl.int64) * stride_mh

    # Key band of these rows: masked edge tiles, unmasked interior, masked edge tiles.
    last_row = tl.minimum(m0 + BLOCK_M, sq) - 1
    n_begin, n_full_lo, n_full_hi, n_end = band_bounds(
        m0, last_row, sk, sk - sq - window_left, sk - sq + window_right, BLOCK_N)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running normaliser
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
        n_begin, n_full_lo, sq, sk, window_left, window_right, score_mul,
        cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
        HEAD_DIM, BLOCK_N, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS,
        V_T, PLAIN_SCORES, P_PERM, HAS_MASK)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
        n_full_lo, n_full_hi, sq, sk, window_left, window_right, score_mul,
        cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
        HEAD_DIM, BLOCK_N, BLOCK_D, False, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS,
        V_T, PLAIN_SCORES, P_PERM, HAS_MASK)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_vs, stride_vd, b, hk, rows,
        n_full_hi, n_end, sq, sk, window_left, window_right, score_mul,
        cap_mul, alibi_mul, seed, bh, max_seqlen_k, dropout_p, mask_base, stride_mq, stride_mk,
        HEAD_DIM, BLOCK_N, BLOCK_D, True, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, PRECISION, LOADS,
        V_T, PLAIN_SCORES, P_PERM, HAS_MASK)

    # Epilogue: normalise once; rows that saw no key get out = 0 and LSE = -inf.
    empty = l_i == 0.0
    inv_l = 1.0 / tl.where(empty, 1.0, l_i)
    if HAS_DROPOUT:
        inv_l = inv_l / (1.0 - dropout_p)
    if IS_FP8:
        inv_l = inv_l * tl.load(descale + 2 * stride_desc)
    out = acc * inv_l[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * LN2)
    if LOADS == LOAD_DESC:  # the copy engine clips the box at S and D
        Out.store([b, m0, h, 0], out.to(Out.dtype).reshape(1, BLOCK_M, 1, BLOCK_D))
    else:
        o_base = Out + b64 * stride_ob + q_start * stride_os + h.to(tl.int64) * stride_oh
        store_tile(o_base, stride_os, rows, offs_d, sq, out, HEAD_DIM, LOADS == LOAD_PTR64)
    lse_base = Lse + b64 * stride_lb + h * stride_lh + q_start
    tl.store(lse_base + rows, lse, mask=rows < sq)


_fwd_launch = CachedKernel(_fwd_kernel)


@triton.jit
def _probs_kernel(Q, K, Lse, Probs, CuSeqQ, CuSeqK, Alibi, Seed, Mask,
                  stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                  stride_lb, stride_lh, stride_pbh, stride_pm, stride_ab, stride_ah,
                  stride_mb, stride_mh, stride_mq, stride_mk,
                  num_heads, kv_group, seqlen_q, seqlen_k, max_seqlen_k,
                  window_left, window_right, score_mul, cap_mul, dropout_p,
                  HEAD_DIM: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                  HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                  HAS_MASK: tl.constexpr):
    """Probs[b, h, i, j] = softmax probability (before dropout), negated where dropout
    drops the element, 0 where masked. A debugging aid: it visits every key tile
    of the padded (max_seqlen_q, max_seqlen_k) matrix, which starts zeroed."""
    pid_m = tl.program_id(0)
    bh = batch_head()
    b = bh // num_heads
    h = bh % num_heads
    hk = h // kv_group
    q_start, sq = _seq_bounds(CuSeqQ, b, seqlen_q, IS_VARLEN)
    k_start, sk = _seq_bounds(CuSeqK, b, seqlen_k, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:
        return
    rows = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    b64 = b.to(tl.int64)
    q_base = Q + b64 * stride_qb + q_start * stride_qs + h.to(tl.int64) * stride_qh
    k_base = K + b64 * stride_kb + k_start * stride_ks + hk.to(tl.int64) * stride_kh
    q = load_tile(q_base, stride_qs, rows, offs_d, sq, HEAD_DIM, True, True)
    lse = tl.load(Lse + b64 * stride_lb + h * stride_lh + q_start + rows, mask=rows < sq,
                  other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)  # exp2(s - inf) = 0
    alibi_mul, seed = head_scalars(Alibi, stride_ab, stride_ah, b, h, Seed, HAS_ALIBI,
                                   HAS_DROPOUT)
    p_base = Probs + bh.to(tl.int64) * stride_pbh
    mask_base = Mask + b64 * stride_mb + h.to(tl.int64) * stride_mh
    for n in range(0, sk, BLOCK_N):
        cols = n + offs_n
        k = load_tile(k_base, stride_ks, cols, offs_d, sk, HEAD_DIM, True, True)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        s, _ = score_tile(qk, rows[:, None], cols[None, :], sk - sq, score_mul, cap_mul,
                          alibi_mul, HAS_SOFTCAP, HAS_ALIBI)
        visible = visible_mask(rows[:, None], cols[None, :], sq, sk, window_left, window_right)
        if HAS_MASK:
            visible = visible & allowed_tile(mask_base, stride_mq, stride_mk, rows[:, None],
                                             cols[None, :], sq, sk)
        p = tl.exp2(s - lse2[:, None])
        if HAS_DROPOUT:
            keep = dropout_keep(seed, bh, rows[:, None], cols[None, :], max_seqlen_k, dropout_p)
            p = tl.where(keep, p, -p)  # flash_attn's convention: negative = dropped
        p = tl.where(visible, p, 0.0)
        tl.store(p_base + rows[:, None].to(tl.int64) * stride_pm + cols[None, :], p,
                 mask=(rows[:, None] < sq) & (cols[None, :] < sk))


_probs_launch = CachedKernel(_probs_kernel)


# Experiment switches (benchmarks/fp8_bench.py --variants): V's layout for FP8 P.V, and
# whether its keys are stored permuted so that P needs no shuffles (dense inputs only).
FP8_V_TRANSPOSED = True
FP8_P_PERM = True
# Dense causal / full attention on Hopper takes the Gluon kernel (forward_hopper.py);
# False sends everything to the Triton kernel here (A/B runs, benchmarks/gluon_ab.py).
USE_HOPPER_KERNEL = True


_PLANS = PlanCache()


class _ForwardPlan(NamedTuple):
    launch: BoundLaunch | None  # None: an empty grid, nothing to launch
    boxes: tuple | None  # TMA block shapes of (q, k, v, out), None for pointer loads
    grid: tuple
    shared: dict  # keyword arguments the probs kernel shares
    flags: dict
    lse_strides: tuple
    alibi_strides: tuple
    mask_strides: tuple


def _plan_forward(q, k, v, out, lse, alibi_slopes, cfg, loads, *, varlen, batch,
                  max_seqlen_q, max_seqlen_k, softmax_scale, window_left, window_right, softcap,
                  dropout_p, fp32_precision, v_t, p_perm, stride_vd,
                  mask_strides) -> _ForwardPlan:
    """Everything about a Triton forward launch but its tensors, from shapes, strides,
    dtypes, options and the config (memoised by `attention_forward` on exactly those)."""
    num_heads, head_dim = q.shape[-2], q.shape[-1]
    kv_heads = k.shape[-2]
    seqlen_q, seqlen_k = (0, 0) if varlen else (q.shape[1], k.shape[1])
    is_fp8 = q.dtype == torch.float8_e4m3fn
    has_alibi = alibi_slopes is not None
    stride_lb, stride_lh = (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))
    stride_ab, stride_ah = alibi_slopes.stride() if has_alibi else (0, 0)
    block_d = padded_head_dim(head_dim)
    flags = dict(HEAD_DIM=head_dim, IS_VARLEN=varlen, HAS_ALIBI=has_alibi,
                 HAS_DROPOUT=dropout_p > 0.0, PRECISION=dot_precision(q.dtype, fp32_precision),
                 BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
                 HAS_MASK=mask_strides is not None)
    mask_strides = mask_strides or (0, 0, 0, 0)
    shared = dict(num_heads=num_heads, kv_group=num_heads // kv_heads, seqlen_q=seqlen_q,
                  seqlen_k=seqlen_k, max_seqlen_k=max_seqlen_k, dropout_p=dropout_p,
                  **launch_scalars(softmax_scale=softmax_scale, softcap=softcap,
                                   window_left=window_left, window_right=window_right,
                                   max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k))
    grid = (cdiv(max_seqlen_q, cfg.block_m), *batch_head_grid(batch, num_heads))
    boxes = None
    if loads == LOAD_DESC.value:
        boxes = ([1, cfg.block_m, 1, block_d], [1, cfg.block_n, 1, block_d],
                 [1, 1, block_d, cfg.block_n] if v_t else [1, cfg.block_n, 1, block_d],
                 [1, cfg.block_m, 1, block_d])
    launch = None
    if grid[0] > 0 and grid[1] > 0:
        trailing = (*seq_strides(q, varlen), *seq_strides(k, varlen), *seq_strides(v, varlen),
                    *seq_strides(out, varlen), stride_lb, stride_lh, stride_ab, stride_ah,
                    stride_vd, batch * kv_heads, *mask_strides)
        launch = _fwd_launch.bind(grid, trailing, dict(
            **shared, **flags, LOADS=loads, IS_FP8=is_fp8, V_T=v_t,
            PLAIN_SCORES=softcap == 0.0 and not has_alibi and softmax_scale > 0,
            P_PERM=p_perm, LONGEST_FIRST=cfg.longest_first, num_warps=cfg.num_warps,
            num_stages=cfg.num_stages))
    return _ForwardPlan(launch, boxes, grid, shared, flags, (stride_lb, stride_lh),
                        (stride_ab, stride_ah), mask_strides)


@on_tensors_device
def attention_forward(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      softmax_scale: float, window_left: int, window_right: int, softcap: float,
                      alibi_slopes, dropout_p: float, seed, return_probs: bool,
                      fp32_precision: str = "tf32", descales=None, attn_mask=None):
    """Run the forward kernel; returns (out, lse, probs or None). See the package doc.

    FP8 (e4m3) q, k, v: `descales` = (q_descale, k_descale, v_descale), each fp32
    (B, Hk); the output is bf16. (No dropout or probs with FP8: validated upstream.)
    `attn_mask`: None or a (B, H, Sq, Sk) bool tensor, any strides (dense only); it
    sends the call to the Triton kernel, which reads it per tile.
    """
    is_fp8 = q.dtype == torch.float8_e4m3fn
    out_dtype = torch.bfloat16 if is_fp8 else q.dtype
    varlen = cu_seqlens_q is not None
    if varlen:
        total_q, num_heads, head_dim = q.shape
        batch = cu_seqlens_q.numel() - 1
        out = torch.zeros(q.shape, dtype=out_dtype, device=q.device)
        lse = torch.full((num_heads, total_q), float("-inf"), dtype=torch.float32, device=q.device)
        seqlen_q = seqlen_k = 0  # per item, read from cu_seqlens inside the kernel
    else:
        batch, seqlen_q, num_heads, head_dim = q.shape
        seqlen_k = k.shape[1]
        out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
        lse = torch.empty((batch, num_heads, seqlen_q), dtype=torch.float32, device=q.device)
    kv_heads = k.shape[-2]
    descale = lse  # placeholder, never read
    if is_fp8:
        descale = (torch.stack(descales) if descales is not None  # (3, B, Hk)
                   else torch.ones((3, batch, kv_heads), dtype=torch.float32, device=q.device))
    if (USE_HOPPER_KERNEL and not varlen and not return_probs and attn_mask is None
            and forward_hopper.supports(
            q, k, v, softmax_scale=softmax_scale, window_left=window_left,
            window_right=window_right, softcap=softcap, alibi_slopes=alibi_slopes,
            dropout_p=dropout_p)):
        forward_hopper.attention_forward(q, k, v, out, lse, softmax_scale=softmax_scale,
                                         causal=window_right == 0,
                                         descale=descale if is_fp8 else None)
        return out, lse, None
    cfg = get_config("fwd", head_dim, q.dtype, short_causal=window_right == 0
                     and max_seqlen_q <= SHORT_CAUSAL_MAX_ROWS)
    v_t = is_fp8 and FP8_V_TRANSPOSED
    p_perm = v_t and FP8_P_PERM and not varlen
    vt, stride_vd = None, 1
    if v_t:
        v, vt, stride_vd = transposed_v(v, p_perm)
    srcs = (q, k, v, out)
    if (cfg.tma and not varlen and descriptor_ok(*((q, k, vt, out) if v_t else srcs))
            and descriptors_pay(batch, num_heads, seqlen_q, seqlen_k, head_dim,
                                window_right == 0)):
        loads = LOAD_DESC.value
    else:
        loads = pointer_mode(max(max_seqlen_q, max_seqlen_k), *srcs)
    has_alibi = alibi_slopes is not None
    mask_strides = None if attn_mask is None else attn_mask.stride()
    # everything `_plan_forward` reads
    key = (cfg, loads, v_t, p_perm, varlen, batch, max_seqlen_q, max_seqlen_k, softmax_scale,
           window_left, window_right, softcap, dropout_p, fp32_precision, q.dtype, q.shape,
           q.stride(), k.shape, k.stride(), v.shape, v.stride(), stride_vd, out.stride(),
           lse.stride(), alibi_slopes.stride() if has_alibi else None, mask_strides)
    plan = _PLANS.get(key) or _PLANS.add(key, _plan_forward(
        q, k, v, out, lse, alibi_slopes, cfg, loads, varlen=varlen, batch=batch,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale,
        window_left=window_left, window_right=window_right, softcap=softcap,
        dropout_p=dropout_p, fp32_precision=fp32_precision, v_t=v_t, p_perm=p_perm,
        stride_vd=stride_vd, mask_strides=mask_strides))
    placeholder = lse  # for the tensors a call does not have (never read)
    mask = placeholder if attn_mask is None else attn_mask.view(torch.uint8)
    cu_q, cu_k = (cu_seqlens_q, cu_seqlens_k) if varlen else (placeholder, placeholder)
    alibi = alibi_slopes if has_alibi else placeholder
    seed_t = seed if dropout_p > 0.0 else placeholder
    if plan.boxes is not None:  # TMA: descriptors over this call's tensors
        q_box, k_box, v_box, o_box = plan.boxes
        srcs = (box_descriptor(q, q_box), box_descriptor(k, k_box),
                box_descriptor(vt if v_t else v, v_box), box_descriptor(out, o_box))
    if plan.launch is not None:
        plan.launch(*srcs, lse, cu_q, cu_k, alibi, seed_t, descale, mask)

    probs = None
    if return_probs:
        probs = torch.zeros((batch, num_heads, max_seqlen_q, max_seqlen_k), dtype=torch.float32,
                            device=q.device)
        if plan.launch is not None:
            _probs_launch[plan.grid](
                q, k, lse, probs, cu_q, cu_k, alibi, seed_t, mask,
                *seq_strides(q, varlen), *seq_strides(k, varlen), *plan.lse_strides,
                probs.stride(1), probs.stride(2), *plan.alibi_strides, *plan.mask_strides,
                **plan.shared,
                **plan.flags, num_warps=cfg.num_warps, num_stages=1)
    return out, lse, probs
