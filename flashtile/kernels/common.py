"""Pieces shared by the forward and backward kernels, written once.

Device side (``@triton.jit``):

* `score_tile`      raw Q.K^T tile -> scores in log2 units (scale, softcap, ALiBi)
* `visible_mask`    bottom-right aligned causal / local window + sequence bounds
* `allowed_tile`    the caller's boolean `attn_mask` at a tile (False past the ends)
* `any_allowed`     whether such a tile lets any pair through (else it is skipped)
* `dropout_keep`    Philox keep mask, reproducible between forward and backward
* `band_bounds`     which tiles of the other axis a tile must visit, split into
                    boundary tiles (need masking) and interior tiles (do not)
* `tile_span`       a tile loop's bounds with its start provably a multiple of BLOCK
* `query_block`     which query block a forward / dQ program owns (longest first)
* `tanh_exp2`       tanh written with exp2 (no libdevice needed)
* `load_tile`       a [rows, BLOCK_D] tile of Q, K, V or dO, masked at the edges
* `store_tile`      its mirror for O, dQ, dK, dV (cast to the output's dtype)
* `load_block`      `load_tile`, or the same rows through a TMA tensor descriptor
* `probs_tile`      P (or P^T) recomputed from scores and the stored LSE (backward)
* `head_scalars`    the ALiBi slope (log2 units) and dropout seed of one program

The helpers take query and key indices as broadcastable tensors (``[BM, 1]`` and
``[1, BN]`` for a Q x K tile, ``[1, BM]`` and ``[BN, 1]`` for a transposed K x Q
tile), so the same code serves both orientations.

Host side: `seq_strides` and `launch_scalars` turn the launcher arguments into
kernel arguments the same way for every pass.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .config import interpreter_active

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # log2(e)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)  # ln(2)


@triton.jit
def tanh_exp2(x):
    """tanh without libdevice (the interpreter has none).

    1 - 2 / (exp(2x) + 1) cancels as x -> 0: its error is ~2^-24 absolute, which
    softcap multiplies by the cap (a cap of 50 gave 4x plain float32's error).
    Below |x| = 0.5 the odd Taylor series to x^15 is float32-exact instead
    (next term < 1e-8 relative); above it the cancellation costs at most ~1 bit.
    """
    big = 1.0 - 2.0 / (tl.exp2(x * (2.0 * LOG2E)) + 1.0)  # exp2 -> inf or 0 gives +1 / -1
    x2 = x * x
    poly = -929569.0 / 638512875.0
    poly = poly * x2 + 21844.0 / 6081075.0
    poly = poly * x2 - 1382.0 / 155925.0
    poly = poly * x2 + 62.0 / 2835.0
    poly = poly * x2 - 17.0 / 315.0
    poly = poly * x2 + 2.0 / 15.0
    poly = poly * x2 - 1.0 / 3.0
    small = x + x * x2 * poly
    return tl.where(tl.abs(x) < 0.5, small, big)


@triton.jit
def score_tile(qk, q_idx, k_idx, diag_offset, score_mul, cap_mul, alibi_mul,
               HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr):
    """Turn a raw fp32 dot-product tile into scores in log2 units.

    Without softcap: s = qk * scale * log2(e)            (score_mul = scale*log2e)
    With softcap:    t = tanh(qk * scale / cap)           (score_mul = scale/cap)
                     s = cap * log2(e) * t                (cap_mul = cap*log2e)
    ALiBi then adds -slope * log2(e) * |i + sk - sq - j|  (alibi_mul = slope*log2e).
    Returns (s, t); t (needed by the softcap gradient) is qk when there is no softcap.
    """
    if HAS_SOFTCAP:
        t = tanh_exp2(qk * score_mul)
        s = t * cap_mul
    else:
        t = qk
        s = qk * score_mul
    if HAS_ALIBI:
        dist = q_idx + diag_offset - k_idx  # signed distance to the diagonal
        s = s - alibi_mul * tl.abs(dist).to(tl.float32)
    return s, t


@triton.jit
def visible_mask(q_idx, k_idx, seqlen_q, seqlen_k, window_left, window_right):
    """True where query q_idx sees key k_idx (bottom-right aligned window).

    Unbounded window sides arrive as a sentinel larger than any distance, so the
    same comparisons serve causal, local and full attention.
    """
    diag = q_idx + (seqlen_k - seqlen_q)  # key index on the query's diagonal
    inside = (k_idx >= diag - window_left) & (k_idx <= diag + window_right)
    return inside & (k_idx < seqlen_k) & (q_idx < seqlen_q)


@triton.jit
def allowed_tile(mask_base, stride_mq, stride_mk, q_idx, k_idx, seqlen_q, seqlen_k):
    """The caller's boolean attn_mask (bytes, True = may attend) at (q_idx, k_idx).

    Its strides may be 0 (a mask broadcast over queries or keys); offsets are 64-bit
    because Sq x Sk passes 2^31 from 46k x 46k tokens. Past either end: False.
    """
    inside = (q_idx < seqlen_q) & (k_idx < seqlen_k)
    offs = q_idx.to(tl.int64) * stride_mq + k_idx.to(tl.int64) * stride_mk
    return tl.load(mask_base + offs, mask=inside, other=0) != 0


@triton.jit
def any_allowed(allowed):
    """True when some pair of the tile is allowed: tiles the mask hides entirely
    contribute nothing (P = 0 there), so skipping them is exact."""
    return tl.max(tl.max(allowed.to(tl.int32), 1), 0) > 0


@triton.jit
def dropout_keep(seed, bh, q_idx, k_idx, max_seqlen_k, dropout_p):
    """Keep mask of element (b, h, i, j): Philox uniform >= dropout_p.

    Philox(key = seed, counter = (i * max_seqlen_k + j, b * H + h, 0, 0)): each
    (batch, head) has its own stream, so the in-stream position needs only 32 bits
    (wrapping int32 arithmetic read as uint32: the position mod 2^32).
    """
    pos = (q_idx * max_seqlen_k + k_idx).to(tl.uint32)
    zero = pos * 0
    rnd, _, _, _ = tl.philox(seed, pos, zero + bh.to(tl.uint32), zero, zero)
    return tl.uint_to_uniform_float(rnd) >= dropout_p


# How a kernel moves Q/K/V/O tiles (its LOADS constexpr): pointers with 32-bit row
# offsets, TMA descriptors, or pointers with 64-bit row offsets for items whose row x
# stride can pass 2^31 elements (packed qkv beyond ~175k tokens). 64-bit offsets are
# not the default: per-row int64 cost 3-5% in the d256 dK/dV kernel, and a 64-bit tile
# start with loop-invariant 32-bit rows 7% (register pressure; A/B on the H200, NOTES).
LOAD_PTR: tl.constexpr = tl.constexpr(0)
LOAD_DESC: tl.constexpr = tl.constexpr(1)
LOAD_PTR64: tl.constexpr = tl.constexpr(2)


def pointer_mode(max_rows: int, *tensors: torch.Tensor) -> int:
    """LOAD_PTR, or LOAD_PTR64 when some row index x sequence stride (dim -3: S of
    (B, S, H, D), tokens of varlen (total, H, D)) reaches 2^31 elements."""
    span = max_rows * max(x.stride(-3) for x in tensors)
    return LOAD_PTR64.value if span >= 2**31 else LOAD_PTR.value


@triton.jit
def load_tile(base, stride, idx, offs_d, length, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
              INT64_ROWS: tl.constexpr):
    """Rows `idx` of a (seq, head_dim) slice; rows past `length` and the padded
    head-dim columns read as 0. Interior tiles (MASKED=False) skip the row test."""
    mask = offs_d[None, :] < HEAD_DIM
    if MASKED:
        mask = mask & (idx[:, None] < length)
    rows = idx[:, None]
    if INT64_ROWS:
        rows = rows.to(tl.int64)
    return tl.load(base + rows * stride + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def store_tile(base, stride, idx, offs_d, length, value, HEAD_DIM: tl.constexpr,
               INT64_ROWS: tl.constexpr):
    """Write rows `idx` < length of a (seq, head_dim) slice, cast to its dtype."""
    mask = (idx[:, None] < length) & (offs_d[None, :] < HEAD_DIM)
    rows = idx[:, None]
    if INT64_ROWS:
        rows = rows.to(tl.int64)
    tl.store(base + rows * stride + offs_d[None, :], value.to(base.dtype.element_ty), mask=mask)


@triton.jit
def load_block(src, stride, b, h, row0, idx, offs_d, length, HEAD_DIM: tl.constexpr,
               MASKED: tl.constexpr, LOADS: tl.constexpr, BLOCK: tl.constexpr,
               BLOCK_D: tl.constexpr):
    """Rows row0 .. row0 + BLOCK (= `idx`) of one head: `src` is either the head's base
    pointer (`load_tile`) or, with LOADS == LOAD_DESC, a (B, S, H, D) tensor descriptor,
    whose copy engine (TMA) zero-fills rows past S and columns past D itself, so no
    mask is computed."""
    if LOADS == LOAD_DESC:  # (one branch is compiled: an early return would compile both)
        tile = src.load([b, row0, h, 0]).reshape(BLOCK, BLOCK_D)
    else:
        tile = load_tile(src, stride, idx, offs_d, length, HEAD_DIM, MASKED, LOADS == LOAD_PTR64)
    return tile


@triton.jit
def probs_tile(qk, q_idx, k_idx, lse2, seqlen_q, seqlen_k, window_left, window_right,
               score_mul, cap_mul, alibi_mul, allowed, HAS_SOFTCAP: tl.constexpr,
               HAS_ALIBI: tl.constexpr, MASKED: tl.constexpr, HAS_MASK: tl.constexpr):
    """Backward: P = exp2(s - lse2) from a raw dot tile, 0 where not visible
    (outside the window, or, with HAS_MASK, where the `allowed_tile` is False).

    lse2 is the row LSE in log2 units, +inf for rows that see no key (so P = 0
    there instead of NaN). Returns (P, t) with t as in `score_tile`.
    """
    s, t = score_tile(qk, q_idx, k_idx, seqlen_k - seqlen_q, score_mul, cap_mul, alibi_mul,
                      HAS_SOFTCAP, HAS_ALIBI)
    p = tl.exp2(s - lse2)
    if MASKED:
        visible = visible_mask(q_idx, k_idx, seqlen_q, seqlen_k, window_left, window_right)
        p = tl.where(visible, p, 0.0)
    if HAS_MASK:
        p = tl.where(allowed, p, 0.0)
    return p, t


@triton.jit
def head_scalars(Alibi, stride_ab, stride_ah, b, h, Seed,
                 HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr):
    """(alibi_mul, seed) for batch b, query head h; 0 for options that are off."""
    alibi_mul = 0.0
    if HAS_ALIBI:
        alibi_mul = tl.load(Alibi + b * stride_ab + h * stride_ah) * LOG2E
    seed = 0
    if HAS_DROPOUT:
        seed = tl.load(Seed)
    return alibi_mul, seed


@triton.jit
def band_bounds(a_first, a_last, len_b, lo_shift, hi_shift, BLOCK: tl.constexpr):
    """Tiles of axis b that rows a_first..a_last of axis a must visit.

    Element (a, b) is visible iff a + lo_shift <= b <= a + hi_shift and
    0 <= b < len_b (forward / dQ: a = query, b = key, lo_shift = sk - sq - left,
    hi_shift = sk - sq + right; dK/dV: a = key, b = query, the shifts mirrored).
    Returns (begin, full_lo, full_hi, end): visit tiles starting in [begin, end);
    those in [full_lo, full_hi) are visible for every (a, b) pair and need no
    mask; tiles outside the band are skipped entirely.
    """
    # b range touched by at least one a of the tile
    lo = tl.maximum(a_first + lo_shift, 0)
    end = tl.maximum(tl.minimum(a_last + hi_shift + 1, len_b), lo)
    begin = tl.where(lo < end, (lo // BLOCK) * BLOCK, end)  # empty band: visit nothing
    # b range visible to every a of the tile, rounded inwards to whole tiles
    full_lo = tl.maximum(a_last + lo_shift, 0)
    full_hi = tl.maximum(tl.minimum(a_first + hi_shift + 1, len_b), 0)
    full_lo = tl.maximum(tl.minimum(tl.cdiv(full_lo, BLOCK) * BLOCK, end), begin)
    full_hi = tl.maximum((full_hi // BLOCK) * BLOCK, full_lo)
    return begin, full_lo, full_hi, end


@triton.jit
def tile_span(start, stop, BLOCK: tl.constexpr):
    """Bounds of `range(start, stop, BLOCK)` with a start the compiler can prove is a
    multiple of BLOCK. `band_bounds` starts every non-empty span on a tile boundary,
    but through min/max the compiler only knows "divisible by 1"; then loads that are
    contiguous along the tile axis (the forward's FP8 transposed V) fall back to one
    element per instruction and are not pipelined (1-byte loads: NOTES.md session 5).
    An empty span stays empty."""
    first = (start // BLOCK) * BLOCK  # start >= 0
    return first, tl.where(start < stop, stop, first)


@triton.jit
def batch_head():
    """This program's batch * head (or batch * KV head) index: grid axis 1, continued on
    axis 2 past CUDA's 65535 (`config.batch_head_grid`)."""
    return tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)


@triton.jit
def query_block(LONGEST_FIRST: tl.constexpr):
    """The query block of this forward / dQ program (grid axis 0). Programs start in
    grid order, x fastest, so with LONGEST_FIRST (a config field) each head's last
    query blocks -- the longest under a causal mask -- start first and the launch ends
    on short ones instead of a tail of long ones."""
    pid = tl.program_id(0)
    if LONGEST_FIRST:
        pid = tl.num_programs(0) - 1 - pid
    return pid


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------

def seq_strides(x: torch.Tensor, varlen: bool) -> tuple[int, int, int]:
    """(batch, sequence, head) strides in elements of a (B, S, H, D) or (T, H, D) tensor."""
    st = x.stride()  # (one call: this runs per tensor per launch)
    return (0, st[0], st[1]) if varlen else (st[0], st[1], st[2])


def launch_scalars(*, softmax_scale: float, softcap: float, window_left: int,
                   window_right: int, max_seqlen_q: int, max_seqlen_k: int) -> dict:
    """Scalar kernel arguments shared by every pass (see `score_tile`)."""
    log2e = 1.0 / math.log(2.0)
    unbounded = max_seqlen_q + max_seqlen_k + 1  # wider than any |i + sk - sq - j|
    if softcap > 0:
        score_mul, cap_mul = softmax_scale / softcap, softcap * log2e
    else:
        score_mul, cap_mul = softmax_scale * log2e, 0.0
    return dict(
        score_mul=score_mul,
        cap_mul=cap_mul,
        window_left=window_left if window_left >= 0 else unbounded,
        window_right=window_right if window_right >= 0 else unbounded,
        HAS_SOFTCAP=softcap > 0,
    )


def descriptor_ok(*tensors: torch.Tensor) -> bool:
    """True when dense (B, S, H, D) 8/16-bit tensors meet TMA's rules: base and every
    stride but the last 16-byte aligned (packed qkv with an odd head dim is not)."""
    for x in tensors:
        size, st = x.element_size(), x.stride()
        if len(st) != 4 or size not in (1, 2) or st[3] != 1 or x.data_ptr() % 16:
            return False
        if (st[0] * size) % 16 or (st[1] * size) % 16 or (st[2] * size) % 16:
            return False
    return True


# Host-side descriptors cost ~55 us per launch on the H200 host (four TensorDescriptors
# built, validated and encoded; NOTES.md session 3, 8). Below ~2e10 flops (~0.1 ms on
# the GPU) a launch is host-bound and pointer loads win; above it the GPU is the
# bottleneck and TMA's 10-20% counts (a 1.5e11 threshold cost 16% at d128, 1k tokens).
TMA_MIN_FLOPS = 2e10


def forward_flops(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
                  causal: bool) -> float:
    """Matmul flops of a forward (two matmuls, halved under a causal mask)."""
    return 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim * (0.5 if causal else 1.0)


def descriptors_pay(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
                    causal: bool) -> bool:
    """True when a forward of this size is long enough to repay building descriptors
    (always in the interpreter, where the descriptor path is what is being tested)."""
    flops = forward_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal)
    return flops >= TMA_MIN_FLOPS or interpreter_active()


def make_descriptor(x: torch.Tensor, block_rows: int, block_d: int):
    """A (B, S, H, D) descriptor that moves [1, block_rows, 1, block_d] boxes, or a
    (rows, H, D) one that moves [block_rows, 1, block_d] boxes.

    Built without TensorDescriptor's __post_init__: it only re-checks what
    `descriptor_ok` established (alignment, strides, power-of-two box), and in Python
    that costs ~8 us per descriptor, four per launch (Triton 3.6's dataclass)."""
    return box_descriptor(x, [1, block_rows, 1, block_d] if x.dim() == 4
                          else [block_rows, 1, block_d])


def box_descriptor(x: torch.Tensor, block_shape: list[int], cls=None, **fields):
    """A descriptor over all of `x` that moves `block_shape` boxes (zero fill outside):
    Triton's host TensorDescriptor, or `cls` (Gluon's, with its extra `fields`), built
    without the dataclass's __post_init__, so x must have passed `descriptor_ok`."""
    cls = cls or TensorDescriptor
    desc = cls.__new__(cls)
    desc.base, desc.shape, desc.strides, desc.padding = x, list(x.shape), list(x.stride()), "zero"
    desc.block_shape = block_shape
    for name, value in fields.items():
        setattr(desc, name, value)
    return desc


def dot_precision(dtype: torch.dtype, fp32_precision: str) -> str:
    """input_precision for tl.dot: only fp32 inputs have a choice (tf32 / ieee)."""
    if dtype == torch.float32:
        if fp32_precision not in ("tf32", "ieee"):
            raise ValueError(f"fp32_precision must be 'tf32' or 'ieee', got {fp32_precision!r}")
        return fp32_precision
    return "tf32"


