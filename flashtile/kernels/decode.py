"""Split-KV attention straight on a (paged) KV cache: Flash-Decoding in Triton.

What `flash_attn_with_kvcache` runs on the Triton backend. No gather: the
kernel reads K/V where they live, either a contiguous cache
(B_cache, S_cache, Hk, D) (row ``cache_batch_idx[b]`` for sequence b) or a paged
cache (num_blocks, page_size, Hk, D) through ``block_table[b, p]``.

Layout of the work
------------------
* **GQA packing.** The G = H / Hk query heads of a KV group become one tile of
  rows: packed row ``r = i * G + g`` is (query position i, head hk * G + g).
  A K/V tile is therefore loaded once per group, not once per query head; for
  decoding (Sq = 1) a whole group is one 16-row tile.
* **Grid** ``(row blocks, B * Hk, num_splits)``. Program (m, b * Hk + hk, s) finds
  the band of keys its rows can see inside sequence b's live range
  ``[cache_leftpad[b], cache_seqlens[b])`` (bottom-right causal / window relative
  to that range, out-of-band tiles never touched), cuts the band into
  ``num_splits`` contiguous chunks of whole BLOCK_N tiles and folds chunk s into
  an online softmax (fp32 accumulators, base-2 exponentials). Tiles are aligned
  to absolute cache positions, so with page_size % BLOCK_N == 0 a tile sits in a
  single page (one page-table read per tile); other page sizes gather the page of
  each key row.
* **Merge.** With num_splits == 1 the program writes the final output (q's
  dtype) and LSE. Otherwise it writes a normalised fp32 partial output and its
  natural-log LSE into (num_splits, B * Hk, Sq * G, D) / (num_splits, B * Hk,
  Sq * G) scratch, and `_merge_kernel` combines the splits by LSE: exactly the
  function of `flashtile.merge.merge_attention_states` (empty splits carry LSE
  -inf and contribute nothing; a row that sees no key gets out 0, LSE -inf).

``num_splits = 0`` picks the split count with `num_splits_heuristic`
(flash_attn's wave-efficiency rule on the SMs times the programs resident per SM, at least
`MIN_KEYS_PER_SPLIT` keys of cache capacity per split); 1 never splits; n > 1
uses n splits (at most one per key tile of the cache; chunks past a band's end
stay empty).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .common import LN2, LOG2E, dot_precision, launch_scalars, score_tile, visible_mask
from .config import (MAX_GRID_YZ, KernelConfig, cdiv, get_config, interpreter_active,
                     padded_head_dim)
from .launcher import BoundLaunch, CachedKernel, PlanCache, on_tensors_device

# ----------------------------------------------------------------------------
# device side
# ----------------------------------------------------------------------------


@triton.jit
def _load_kv(base, row_off, offs_d, live, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
             MASKED: tl.constexpr):
    """A [BLOCK_N, BLOCK_D] K or V tile at element offsets row_off[:, None] + offs_d.

    Masked tiles zero the rows outside the live key range (the cache may hold
    garbage, even NaN, there: a 0 * NaN in P.V would poison the row)."""
    ptrs = base + row_off[:, None] + offs_d[None, :]
    if MASKED:
        mask = live[:, None] & (offs_d[None, :] < HEAD_DIM)
        return tl.load(ptrs, mask=mask, other=0.0)
    elif HEAD_DIM == BLOCK_D:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)


@triton.jit
def _decode_tiles(acc, l_i, m_i, q, k_base, v_base, bt_row, stride_kb, stride_ks,
                  stride_vb, stride_vs, q_pos, n_start, n_stop, key_lo, key_hi, seqlen_q,
                  seqlen_k, window_left, window_right, score_mul, cap_mul, alibi_mul,
                  HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                  PAGE_SIZE: tl.constexpr, MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                  HAS_ALIBI: tl.constexpr, PRECISION: tl.constexpr):
    """Fold the key tiles starting at absolute cache positions n_start, n_start +
    BLOCK_N, ... < n_stop into the running (acc, l_i, m_i).

    MASKED tiles may hold positions outside [key_lo, key_hi) or cross a causal /
    window edge; the others are visible to every row and skip all masking.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    diag_offset = seqlen_k - seqlen_q
    for n in range(n_start, n_stop, BLOCK_N):
        pos = n + offs_n  # [BLOCK_N] absolute positions in the sequence's cache
        live = (pos >= key_lo) & (pos < key_hi)
        # 1. element offsets of the K/V rows: contiguous, one page, or a page per row
        if PAGE_SIZE == 0:
            k_off = pos.to(tl.int64) * stride_ks
            v_off = pos.to(tl.int64) * stride_vs
        elif PAGE_SIZE % BLOCK_N == 0:  # the whole tile lies in one page
            page = tl.load(bt_row + n // PAGE_SIZE).to(tl.int64)
            slot = (n % PAGE_SIZE) + offs_n
            k_off = page * stride_kb + slot * stride_ks
            v_off = page * stride_vb + slot * stride_vs
        else:
            if MASKED:
                page = tl.load(bt_row + pos // PAGE_SIZE, mask=live, other=0).to(tl.int64)
            else:
                page = tl.load(bt_row + pos // PAGE_SIZE).to(tl.int64)
            slot = pos % PAGE_SIZE
            k_off = page * stride_kb + slot * stride_ks
            v_off = page * stride_vb + slot * stride_vs
        k = _load_kv(k_base, k_off, offs_d, live, HEAD_DIM, BLOCK_D, MASKED)
        v = _load_kv(v_base, v_off, offs_d, live, HEAD_DIM, BLOCK_D, MASKED)
        # 2. scores in log2 units, keys indexed from the start of the live range
        j = pos - key_lo
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        s, _ = score_tile(qk, q_pos[:, None], j[None, :], diag_offset, score_mul, cap_mul,
                          alibi_mul, HAS_SOFTCAP, HAS_ALIBI)
        if MASKED:
            visible = visible_mask(q_pos[:, None], j[None, :], seqlen_q, seqlen_k,
                                   window_left, window_right) & (j >= 0)[None, :]
            s = tl.where(visible, s, float("-inf"))
        # 3. online softmax in base 2
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet stay 0
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _decode_kernel(Q, K, V, Out, Lse, OPart, LPart, SeqlensK, LeftPad, BatchIdx, BlockTable,
                   Alibi,
                   stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                   stride_vb, stride_vs, stride_vh, stride_ob, stride_os, stride_oh,
                   stride_lb, stride_lh, stride_btb, stride_ab, stride_ah,
                   seqlen_q, num_kv_heads, num_splits, window_left, window_right,
                   score_mul, cap_mul,
                   GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
                   HAS_LEFTPAD: tl.constexpr, HAS_BATCH_IDX: tl.constexpr,
                   HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, SPLIT: tl.constexpr,
                   PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    rows_total = seqlen_q * GROUP
    # Axis 0 (2^31 - 1 programs) holds (batch * KV head, row block), row blocks fastest so
    # neighbours share K / V in L2; axes 1 and 2 stop at 65535.
    row_blocks = tl.cdiv(rows_total, BLOCK_M)
    bhk = tl.program_id(0) // row_blocks
    pid_m = tl.program_id(0) % row_blocks
    split = tl.program_id(1)
    b = bhk // num_kv_heads
    hk = bhk % num_kv_heads
    b64 = b.to(tl.int64)

    # Packed rows: r = i * GROUP + g <-> (query position i, query head hk * GROUP + g).
    m0 = pid_m * BLOCK_M
    r = m0 + tl.arange(0, BLOCK_M)
    row_ok = r < rows_total
    q_pos = r // GROUP
    head = hk * GROUP + r % GROUP
    offs_d = tl.arange(0, BLOCK_D)
    q_ptrs = (Q + b64 * stride_qb + q_pos[:, None] * stride_qs + head[:, None] * stride_qh
              + offs_d[None, :])
    q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)

    alibi_mul = tl.zeros([BLOCK_M, 1], dtype=tl.float32)
    if HAS_ALIBI:
        slope = tl.load(Alibi + b * stride_ab + head * stride_ah, mask=row_ok, other=0.0)
        alibi_mul = (slope * LOG2E)[:, None]

    # The sequence's live keys [key_lo, key_hi) and where its K/V live.
    key_hi = tl.load(SeqlensK + b)
    key_lo = 0
    if HAS_LEFTPAD:
        key_lo = tl.load(LeftPad + b)
    seqlen_k = key_hi - key_lo
    bt_row = BlockTable
    if PAGE_SIZE == 0:
        cache_row = b64
        if HAS_BATCH_IDX:
            cache_row = tl.load(BatchIdx + b).to(tl.int64)
        k_base = K + cache_row * stride_kb + hk.to(tl.int64) * stride_kh
        v_base = V + cache_row * stride_vb + hk.to(tl.int64) * stride_vh
    else:
        bt_row = BlockTable + b64 * stride_btb
        k_base = K + hk.to(tl.int64) * stride_kh
        v_base = V + hk.to(tl.int64) * stride_vh

    # Band of local keys these rows can see (bottom-right aligned), and the part of
    # it every row sees; then in absolute cache positions.
    i_first = m0 // GROUP
    i_last = (tl.minimum(m0 + BLOCK_M, rows_total) - 1) // GROUP
    shift = seqlen_k - seqlen_q
    band_lo = key_lo + tl.maximum(i_first + shift - window_left, 0)
    band_hi = key_lo + tl.minimum(i_last + shift + window_right + 1, seqlen_k)
    full_lo = key_lo + tl.maximum(i_last + shift - window_left, 0)
    full_hi = key_lo + tl.minimum(i_first + shift + window_right + 1, seqlen_k)
    begin = (band_lo // BLOCK_N) * BLOCK_N
    n_tiles = tl.where(band_hi > band_lo, tl.cdiv(band_hi - begin, BLOCK_N), 0)
    # This split's chunk [c0, c1) of whole tiles.
    per_split = tl.cdiv(n_tiles, num_splits)
    c0 = begin + split * per_split * BLOCK_N
    c1 = tl.maximum(tl.minimum(c0 + per_split * BLOCK_N, band_hi), c0)
    # Interior tiles (no masking): whole tiles inside [full_lo, full_hi).
    f_lo = tl.cdiv(full_lo, BLOCK_N) * BLOCK_N
    f_hi = tl.maximum(tl.where(full_hi > 0, (full_hi // BLOCK_N) * BLOCK_N, 0), f_lo)
    f_lo = tl.minimum(tl.maximum(f_lo, c0), c1)
    f_hi = tl.minimum(tl.maximum(f_hi, f_lo), c1)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc, l_i, m_i = _decode_tiles(
        acc, l_i, m_i, q, k_base, v_base, bt_row, stride_kb, stride_ks, stride_vb, stride_vs,
        q_pos, c0, f_lo, key_lo, key_hi, seqlen_q, seqlen_k, window_left, window_right,
        score_mul, cap_mul, alibi_mul, HEAD_DIM, BLOCK_N, BLOCK_D, PAGE_SIZE, True,
        HAS_SOFTCAP, HAS_ALIBI, PRECISION)
    acc, l_i, m_i = _decode_tiles(
        acc, l_i, m_i, q, k_base, v_base, bt_row, stride_kb, stride_ks, stride_vb, stride_vs,
        q_pos, f_lo, f_hi, key_lo, key_hi, seqlen_q, seqlen_k, window_left, window_right,
        score_mul, cap_mul, alibi_mul, HEAD_DIM, BLOCK_N, BLOCK_D, PAGE_SIZE, False,
        HAS_SOFTCAP, HAS_ALIBI, PRECISION)
    acc, l_i, m_i = _decode_tiles(
        acc, l_i, m_i, q, k_base, v_base, bt_row, stride_kb, stride_ks, stride_vb, stride_vs,
        q_pos, f_hi, c1, key_lo, key_hi, seqlen_q, seqlen_k, window_left, window_right,
        score_mul, cap_mul, alibi_mul, HEAD_DIM, BLOCK_N, BLOCK_D, PAGE_SIZE, True,
        HAS_SOFTCAP, HAS_ALIBI, PRECISION)

    # Normalise; a row that saw no key (in this chunk) gets out 0 and LSE -inf.
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc * (1.0 / l_safe)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * LN2)
    d_ok = offs_d[None, :] < HEAD_DIM
    if SPLIT:
        n_bhk = tl.num_programs(0) // row_blocks
        part = (split * n_bhk + bhk).to(tl.int64) * rows_total + r
        tl.store(OPart + part[:, None] * HEAD_DIM + offs_d[None, :], out,
                 mask=row_ok[:, None] & d_ok)
        tl.store(LPart + part, lse, mask=row_ok)
    else:
        o_ptrs = (Out + b64 * stride_ob + q_pos[:, None] * stride_os
                  + head[:, None] * stride_oh + offs_d[None, :])
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok)
        tl.store(Lse + b64 * stride_lb + head * stride_lh + q_pos, lse, mask=row_ok)


_decode_launch = CachedKernel(_decode_kernel)


@triton.jit
def _merge_kernel(OPart, LPart, Out, Lse, stride_ob, stride_os, stride_oh, stride_lb,
                  stride_lh, seqlen_q, num_kv_heads, num_splits,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """out = sum_s exp(lse_s - lse) * out_s, lse = log sum_s exp(lse_s), one packed row
    per program (grid (B * Hk * Sq * G,)).

    SPLIT_BLOCK splits are loaded at once: the loads of a chunk are independent, so
    the merge costs about one memory latency per chunk, not one per split (a loop of
    one split per step took ~0.8 us per split on the H200 and made many splits a loss).
    Splits with LSE -inf contribute nothing; all -inf gives out 0 and LSE -inf (the
    function of `flashtile.merge.merge_attention_states`)."""
    rows_total = seqlen_q * GROUP
    n_bhk = tl.num_programs(0) // rows_total  # axis 0: (batch * KV head, row), as in decode
    bhk = tl.program_id(0) // rows_total
    r = tl.program_id(0) % rows_total
    offs_s = tl.arange(0, SPLIT_BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    m_i = float("-inf")
    l_i = 0.0
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for s0 in range(0, num_splits, SPLIT_BLOCK):
        s = s0 + offs_s
        part = (s * n_bhk + bhk).to(tl.int64) * rows_total + r
        lse_s = tl.load(LPart + part, mask=s < num_splits, other=float("-inf")) * LOG2E
        o_s = tl.load(OPart + part[:, None] * HEAD_DIM + offs_d[None, :],
                      mask=(s < num_splits)[:, None] & d_ok[None, :], other=0.0)
        m_new = tl.maximum(m_i, tl.max(lse_s, 0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        w = tl.exp2(lse_s - m_ref)  # -inf splits weigh 0
        acc = acc * alpha + tl.sum(w[:, None] * o_s, 0)
        l_i = l_i * alpha + tl.sum(w, 0)
        m_i = m_new
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * LN2)
    b64 = (bhk // num_kv_heads).to(tl.int64)
    q_pos = r // GROUP
    head = (bhk % num_kv_heads) * GROUP + r % GROUP
    tl.store(Out + b64 * stride_ob + q_pos * stride_os + head * stride_oh + offs_d,
             (acc / l_safe).to(Out.dtype.element_ty), mask=d_ok)
    tl.store(Lse + b64 * stride_lb + head * stride_lh + q_pos, lse)


_merge_launch = CachedKernel(_merge_kernel)


# ----------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------

# Heuristic constants: SM count assumed off-GPU, the smallest split worth having.
FALLBACK_NUM_SMS = 4
MIN_KEYS_PER_SPLIT = 256  # GPU; the interpreter uses 2 tiles (32 keys)
MAX_SPLITS = 128


def decode_config(rows: int, head_dim: int, dtype: torch.dtype) -> KernelConfig:
    """Launch configuration for Sq * G packed rows (block_m counts packed rows).

    Decoding (<= 32 rows) is memory bound: a 16/32-row tile and K/V tiles of 32 KB
    (128 keys at d = 128) in 3 stages (paged launches get two more, see `_stages`).
    On the H200 (benchmarks/decode_sweep.py) 128-key tiles beat 64-key ones by 4-20%
    at B = 64 (contiguous, page 16 and page 256) and match them elsewhere.
    Prefill-sized row counts take the forward kernel's table.
    """
    if interpreter_active():
        return KernelConfig(16, 16, 1, 1)
    block_d = padded_head_dim(head_dim)
    wide = dtype != torch.float32
    if rows <= 32:
        block_m = 16 if rows <= 16 else 32
        if wide:
            block_n = 128 if block_d <= 128 else 32
            stages = 3
        else:
            block_n = 64 if block_d <= 64 else (32 if block_d <= 128 else 16)
            stages = 2
        return KernelConfig(block_m, block_n, 4, stages)
    fwd = get_config("fwd", head_dim, dtype)
    if rows <= 64 or fwd.block_m <= 64:
        return KernelConfig(min(64, fwd.block_m), fwd.block_n, 4, fwd.num_stages)
    return fwd


def _stages(num_stages: int, paged: bool) -> int:
    """Pipeline depth handed to Triton. With paging, the page-table load in front
    of each K/V tile takes stages of its own: Triton 3.6 double-buffers the paged
    K/V tiles only from num_stages = 5 (checked on sm_90 shared-memory sizes), so
    a paged launch gets two more stages than the contiguous one."""
    return num_stages + 2 if paged and num_stages > 1 else num_stages


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; FALLBACK_NUM_SMS elsewhere."""
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else
                         torch.cuda.current_device())
    return FALLBACK_NUM_SMS


@functools.lru_cache(maxsize=1024)  # pure function of ints, called per decode step
def num_splits_heuristic(programs: int, slots: int, num_key_blocks: int,
                         max_splits: int = MAX_SPLITS) -> int:
    """flash_attn's rule: split only when `programs` (B * Hk * row blocks) cannot
    fill the machine's `slots` (SMs x resident programs per SM), then take the fewest
    splits whose wave efficiency (filled fraction of the last wave of
    ``programs * splits`` over `slots`) is >= 95% of the best; at most one split per
    `num_key_blocks` block of keys. (flash_attn accepts 85%; on the H200 the extra
    programs of a nearly full wave were worth more: 16 splits beat 14 at B = 1.)"""
    if programs <= 0 or programs >= 0.8 * slots:
        return 1
    max_splits = max(1, min(max_splits, slots, num_key_blocks))
    eligible = lambda s: s == 1 or math.ceil(num_key_blocks / s) != math.ceil(
        num_key_blocks / (s - 1))
    effs = {}
    for s in range(1, max_splits + 1):
        if eligible(s):
            waves = programs * s / slots
            effs[s] = waves / math.ceil(waves)
    best = max(effs.values())
    return next(s for s, e in effs.items() if e >= 0.95 * best)


SMEM_PER_SM = 228 * 1024  # Hopper; fewer bytes only means more resident programs assumed


def resident_programs(cfg: KernelConfig, head_dim: int, itemsize: int) -> int:
    """Decode programs that fit on one SM at once, bounded by the K/V pipeline buffers
    (num_stages x (K + V) tiles): 1 for 128-key d128 tiles in 3 stages, 2 for 64-key."""
    per_program = cfg.num_stages * 2 * cfg.block_n * padded_head_dim(head_dim) * itemsize
    return max(1, min(4, SMEM_PER_SM // max(1, per_program)))


def choose_num_splits(batch: int, kv_heads: int, row_blocks: int, key_capacity: int,
                      device: torch.device, cfg: KernelConfig, head_dim: int,
                      itemsize: int) -> int:
    """num_splits=0: the split count for this launch (no host sync: uses capacity)."""
    block_n = cfg.block_n
    min_keys = 2 * block_n if interpreter_active() else max(MIN_KEYS_PER_SPLIT, block_n)
    slots = device_sm_count(device) * resident_programs(cfg, head_dim, itemsize)
    return num_splits_heuristic(batch * kv_heads * row_blocks, slots,
                                max(1, key_capacity // min_keys))


class _DecodePlan(NamedTuple):
    decode: BoundLaunch | None  # None: nothing to launch (no batch or no rows)
    merge: BoundLaunch | None
    part_shape: tuple | None  # the per-split partial outputs' shape, None without a split


_PLANS = PlanCache()


def _plan_decode(q, k_cache, v_cache, block_table, alibi_slopes, has_leftpad: bool,
                 has_batch_idx: bool, *, config, num_splits: int, softmax_scale: float,
                 window_left: int, window_right: int, softcap: float,
                 fp32_precision: str) -> _DecodePlan:
    """`decode_attention`'s launches for these shapes, strides and options (memoised)."""
    batch, seqlen_q, heads, head_dim = q.shape
    paged = block_table is not None
    kv_heads = k_cache.shape[2]
    group = heads // kv_heads
    capacity = k_cache.shape[1] * (block_table.shape[1] if paged else 1)
    rows = seqlen_q * group
    cfg = config or decode_config(rows, head_dim, q.dtype)
    row_blocks = cdiv(rows, cfg.block_m)
    if num_splits == 0:
        span = capacity  # keys a row block may see (no host sync: not the live lengths)
        if window_left >= 0 and window_right >= 0:
            span = min(capacity, window_left + window_right + seqlen_q)
        num_splits = choose_num_splits(batch, kv_heads, row_blocks, span, q.device, cfg,
                                       head_dim, q.element_size())
    # More splits than key tiles would only add empty chunks: same result, fewer programs.
    num_splits = max(1, min(int(num_splits), cdiv(capacity, cfg.block_n), MAX_GRID_YZ))
    if batch == 0 or rows == 0:
        return _DecodePlan(None, None, None)
    split = num_splits > 1
    # out and lse are fresh contiguous (B, Sq, H, D) / (B, H, Sq) tensors
    out_strides = (seqlen_q * heads * head_dim, heads * head_dim, head_dim)
    lse_strides = (heads * seqlen_q, seqlen_q)
    scalars = launch_scalars(softmax_scale=softmax_scale, softcap=softcap,
                             window_left=window_left, window_right=window_right,
                             max_seqlen_q=seqlen_q, max_seqlen_k=capacity)
    has_alibi = alibi_slopes is not None
    stride_ab, stride_ah = alibi_slopes.stride() if has_alibi else (0, 0)
    decode = _decode_launch.bind(
        (batch * kv_heads * row_blocks, num_splits),
        (*q.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3], *out_strides,
         *lse_strides, block_table.stride(0) if paged else 0, stride_ab, stride_ah,
         seqlen_q, kv_heads, num_splits, scalars["window_left"], scalars["window_right"],
         scalars["score_mul"], scalars["cap_mul"]),
        dict(GROUP=group, HEAD_DIM=head_dim, PAGE_SIZE=k_cache.shape[1] if paged else 0,
             HAS_LEFTPAD=has_leftpad, HAS_BATCH_IDX=has_batch_idx and not paged,
             HAS_SOFTCAP=scalars["HAS_SOFTCAP"], HAS_ALIBI=has_alibi, SPLIT=split,
             PRECISION=dot_precision(q.dtype, fp32_precision), BLOCK_M=cfg.block_m,
             BLOCK_N=cfg.block_n, BLOCK_D=padded_head_dim(head_dim),
             num_warps=cfg.num_warps, num_stages=_stages(cfg.num_stages, paged)))
    if not split:
        return _DecodePlan(decode, None, None)
    interpreted = interpreter_active()
    merge = _merge_launch.bind(
        (batch * kv_heads * rows, ),
        (*out_strides, *lse_strides, seqlen_q, kv_heads, num_splits),
        dict(GROUP=group, HEAD_DIM=head_dim,
             SPLIT_BLOCK=min(1 << (num_splits - 1).bit_length(), 16 if interpreted else 64),
             BLOCK_D=padded_head_dim(head_dim), num_warps=1 if interpreted else 4))
    return _DecodePlan(decode, merge, (num_splits, batch * kv_heads, rows, head_dim))


@on_tensors_device
def decode_attention(q, k_cache, v_cache, cache_seqlens, *, cache_leftpad=None,
                     cache_batch_idx=None, block_table=None, softmax_scale: float,
                     window_left: int = -1, window_right: int = -1, softcap: float = 0.0,
                     alibi_slopes=None, num_splits: int = 0, fp32_precision: str = "tf32",
                     config: KernelConfig | None = None, return_partials: bool = False):
    """Attention of q against the live part of a KV cache, split over keys.

    Args (validated by the caller; the last dim of every tensor contiguous):
        q: (B, Sq, H, D).
        k_cache, v_cache: (B_cache, S_cache, Hk, D), or (num_blocks, page_size, Hk, D)
            with block_table; page_size a multiple of 16 (any value works; a
            multiple of the kernel's BLOCK_N reads one page index per tile).
        cache_seqlens: (B,) int32, end of each sequence's keys in its cache.
        cache_leftpad: (B,) int32 or None, start of each sequence's keys.
        cache_batch_idx: (B,) int32 or None, cache row of sequence b (contiguous only).
        block_table: (B, max_pages) int32 or None.
        window_left / window_right: -1 = unbounded; causal is window_right = 0.
        alibi_slopes: (B, H) fp32 or None.
        num_splits: 0 = heuristic, 1 = no split, n = n chunks of each key band.
        config: override the launch configuration (benchmarks).
        return_partials: also return the per-split (out, lse) scratch,
            (num_splits, B * Hk, Sq * G, D) and (num_splits, B * Hk, Sq * G), or
            None when num_splits == 1 (tests).

    Returns:
        out (B, Sq, H, D) in q's dtype and lse (B, H, Sq) fp32 natural log.
    """
    paged = block_table is not None
    has_alibi = alibi_slopes is not None
    # everything `_plan_decode` reads
    key = (config, num_splits, q.dtype, q.device, q.shape, q.stride(), k_cache.shape,
           k_cache.stride(), v_cache.stride(), block_table.shape if paged else None,
           block_table.stride() if paged else None, cache_leftpad is not None,
           cache_batch_idx is not None, alibi_slopes.stride() if has_alibi else None,
           softmax_scale, window_left, window_right, softcap, fp32_precision)
    plan = _PLANS.get(key) or _PLANS.add(key, _plan_decode(
        q, k_cache, v_cache, block_table, alibi_slopes, cache_leftpad is not None,
        cache_batch_idx is not None, config=config, num_splits=num_splits,
        softmax_scale=softmax_scale, window_left=window_left, window_right=window_right,
        softcap=softcap, fp32_precision=fp32_precision))
    batch, seqlen_q, heads, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, seqlen_q), dtype=torch.float32, device=q.device)
    split = plan.part_shape is not None
    o_part = l_part = lse  # placeholders, never touched without a split
    if split:
        o_part = torch.empty(plan.part_shape, dtype=torch.float32, device=q.device)
        l_part = torch.empty(plan.part_shape[:-1], dtype=torch.float32, device=q.device)
    if plan.decode is not None:
        dummy = cache_seqlens
        plan.decode(q, k_cache, v_cache, out, lse, o_part, l_part, cache_seqlens,
                    dummy if cache_leftpad is None else cache_leftpad,
                    dummy if cache_batch_idx is None or paged else cache_batch_idx,
                    block_table if paged else dummy, alibi_slopes if has_alibi else lse)
        if split:
            plan.merge(o_part, l_part, out, lse)
    if return_partials:
        return out, lse, ((o_part, l_part) if split else None)
    return out, lse
