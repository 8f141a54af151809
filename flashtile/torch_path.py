"""The exact attention path in plain PyTorch: CPUs and any device without Triton.

Same algorithm as the kernels, written with tensor ops: queries in blocks, and
for each block an online softmax over the chunks of keys it can see (chunks
wholly outside a causal or window mask are skipped, as the kernels skip tiles);
the backward pass recomputes the scores tile by tile from Q, K, V, O and the
LSE. Memory grows as O(tile), never O(Sq x Sk). Arithmetic is float32 whatever
the input dtype. The two launchers mirror `flashtile.kernels` argument for
argument.

The plain cases on CPU tensors (no dropout, window, softcap, ALiBi or returned
probabilities) go to ATen's CPU flash kernel instead (`flashtile.aten_cpu`):
the same function, several times faster than the tiles here.

Shapes inside this module: the query heads that share a KV head are stacked, so
a score tile is (B, Hk, G*R, C) for a block of R queries, G = H // Hk, and C
keys. That is how GQA works here without repeating K and V.

FP8 (float8_e4m3fn) inputs, forward only: q, k and v are dequantised to float32
with their per-(batch, KV head) descales (q's by the KV head of its group) and
the rest runs as for any other dtype; the output is bfloat16.
"""

from __future__ import annotations

import torch

from flashtile import aten_cpu
from flashtile.validation import FP8_DTYPES, FP8_OUT_DTYPE

# A score tile holds about this many float32 elements (1 MiB): small enough for
# the elementwise softmax work to stay in cache, which on a CPU matters more
# than the per-tile Python overhead (measured ~10x faster than 16 MiB tiles at
# 1k x 1k x 4 heads).
_TILE_ELEMENTS = 1 << 18
# Keys a tile aims for. With all rows of a head in one block, a 2k-query head got
# 16-key chunks, and rescaling its (rows, D) accumulator per chunk cost more than
# the chunk's scores (benchmarks/NOTES.md, session 18).
_TILE_KEYS = 128


# ----------------------------------------------------------------------------- layout


def _groups(x: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """(B, S, H, D) -> (B, Hk, G, S, D) float32."""
    B, S, H, D = x.shape
    return x.float().permute(0, 2, 1, 3).reshape(B, n_kv_heads, H // n_kv_heads, S, D)


def _kv_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, S, Hk, D) -> (B, Hk, S, D) float32."""
    return x.float().permute(0, 2, 1, 3)


def _block_rows(x5: torch.Tensor, queries: slice) -> torch.Tensor:
    """(B, Hk, G, S, D)[..., queries, :] -> (B, Hk, G*R, D): a block's rows, stacked."""
    B, Hk, G, _, D = x5.shape
    return x5[:, :, :, queries].reshape(B, Hk, -1, D)


def _unstack(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hk, G*R, ...) -> (B, Hk, G, R, ...), inverse of `_block_rows`."""
    B, Hk, GR = rows.shape[:3]
    return rows.view(B, Hk, groups, GR // groups, *rows.shape[3:])


def tiling(heads: int, seqlen_q: int, seqlen_k: int) -> tuple[int, int]:
    """(queries per block, keys per chunk) for B*H = `heads`; a pure function of the
    shapes so every pass agrees (a tile's dropout mask is seeded by its corner)."""
    per_row = max(1, _TILE_ELEMENTS // (heads * _TILE_KEYS))
    block = max(1, min(seqlen_q, per_row))
    chunk = _TILE_ELEMENTS // max(1, heads * block)
    return block, max(16, min(chunk, max(seqlen_k, 1))) // 16 * 16


# ----------------------------------------------------------------------------- scores


class _Scores:
    """Masked score tiles of one query block for one (item, options) combination."""

    def __init__(self, q_rows, queries: slice, seqlen_q, seqlen_k, scale, window_left,
                 window_right, softcap, alibi_slopes):
        B, Hk, rows, _ = q_rows.shape
        R = queries.stop - queries.start
        device = q_rows.device
        self.q_rows, self.scale, self.softcap = q_rows, scale, softcap
        self.window = (window_left, window_right)
        # Row r of the block is query i = start + r % R; `diag` is the key it lines
        # up with when the mask is aligned to the bottom-right corner.
        shift = seqlen_k - seqlen_q
        i = queries.start + torch.arange(rows, device=device) % R
        self.diag = (i + shift).view(rows, 1)  # (rows, 1)
        self.first_query = queries.start
        self.diag_range = (queries.start + shift, queries.stop - 1 + shift)
        self.seqlen_k = seqlen_k
        self.slopes = None
        if alibi_slopes is not None:
            g = rows // R
            slopes = alibi_slopes.float().reshape(-1, Hk, g, 1)  # (B or 1, Hk, G, 1)
            self.slopes = slopes.expand(-1, Hk, g, R).reshape(-1, Hk, rows, 1)

    def chunks(self, chunk: int):
        """(start, stop) of the key chunks some row of the block sees, on multiples of
        `chunk` (so a chunk's keys, and its dropout mask, do not depend on the window)."""
        (left, right), (first, last) = self.window, self.diag_range
        lo = max(0, first - left) if left >= 0 else 0
        hi = min(self.seqlen_k, last + right + 1) if right >= 0 else self.seqlen_k
        for start in range(lo // chunk * chunk, hi, chunk):
            yield start, min(start + chunk, self.seqlen_k)

    def tile(self, k_rows: torch.Tensor, start: int):
        """Scores against keys [start, start + C): returns (scores, tanh or None, mask)."""
        s = torch.matmul(self.q_rows, k_rows.transpose(-1, -2)) * self.scale  # (B,Hk,rows,C)
        t = None
        if self.softcap > 0:
            t = torch.tanh(s / self.softcap)
            s = t * self.softcap
        j = torch.arange(start, start + k_rows.shape[-2], device=s.device).view(1, -1)
        if self.slopes is not None:
            s = s - self.slopes * (self.diag - j).abs().float()
        masked = self.masked(j)
        return s.masked_fill(masked, float("-inf")), t, masked

    def masked(self, j: torch.Tensor) -> torch.Tensor:
        left, right = self.window
        out = j >= self.seqlen_k
        if right >= 0:
            out = out | (j > self.diag + right)
        if left >= 0:
            out = out | (j < self.diag - left)
        return out  # (rows, C)


def _scores(q_rows, queries, Sq, Sk, opts) -> _Scores:
    return _Scores(q_rows, queries, Sq, Sk, opts["softmax_scale"], opts["window_left"],
                   opts["window_right"], opts["softcap"], opts["alibi_slopes"])


def _blocks(seqlen_q: int, block: int):
    for start in range(0, seqlen_q, block):
        yield slice(start, min(start + block, seqlen_q))


def _keep_mask(rng, scores, start: int, shape, p: float) -> torch.Tensor:
    """Dropout keep-mask of one tile, reproducible from (seed, item) = `rng` and the
    tile's corner (the block's first query, the chunk's first key)."""
    seed, item = rng
    gen = torch.Generator(device=scores.q_rows.device)
    row, col = scores.first_query, start
    gen.manual_seed((seed * 1_000_003 + item * 10_007 + row * 1_000_033 + col) % (1 << 63))
    return torch.rand(shape, generator=gen, device=scores.q_rows.device) >= p


def _exp(x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """exp(x), exactly 0 where masked.

    The clamp keeps the CPU's exp off -inf and denormal results, which run 3-17x
    slower; e^-80 is ~1e-35 of the row maximum's weight, far below rounding.
    """
    return torch.exp(x.clamp(min=-80.0)).masked_fill_(masked, 0.0)


def _safe(x: torch.Tensor) -> torch.Tensor:
    """-inf -> 0, so rows with no visible key give exp(-inf - 0) = 0, never NaN."""
    return torch.where(torch.isinf(x), torch.zeros_like(x), x)


# ----------------------------------------------------------------------------- forward


def _forward_item(q, k, v, opts, seed, item, return_probs, descales=None):
    """One dense batch: q (B, Sq, H, D), k/v (B, Sk, Hk, D) -> out, lse, probs.

    `descales`: None, or float32 (B, Hk) factors (q, k, v) that dequantise the inputs.
    """
    if descales is not None:
        q, k, v = _dequantised(q, k, v, descales)
    if aten_cpu.covers(q, k, opts, return_probs):
        out, lse = aten_cpu.forward(q, k, v, opts)
        return out, lse, None
    B, Sq, H, _ = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    G = H // Hk
    q5, k_all, v_all = _groups(q, Hk), _kv_heads(k), _kv_heads(v)
    out = torch.zeros((B, Hk, G, Sq, v.shape[-1]), device=q.device)
    lse = torch.full((B, Hk, G, Sq), float("-inf"), device=q.device)
    probs = torch.zeros((B, Hk, G, Sq, Sk), device=q.device) if return_probs else None
    block, chunk = tiling(B * H, Sq, Sk)
    for queries in _blocks(Sq, block):
        scores = _scores(_block_rows(q5, queries), queries, Sq, Sk, opts)
        o, l = _forward_block(scores, k_all, v_all, opts["dropout_p"], chunk, (seed, item))
        out[:, :, :, queries] = _unstack(o, G)
        lse[:, :, :, queries] = _unstack(l.squeeze(-1), G)
        if return_probs:
            p = _probs_block(scores, k_all, l, opts["dropout_p"], chunk, (seed, item))
            probs[:, :, :, queries] = _unstack(p, G)
    return (out.reshape(B, H, Sq, -1).permute(0, 2, 1, 3), lse.reshape(B, H, Sq),
            None if probs is None else probs.reshape(B, H, Sq, Sk))


def _forward_block(scores, k_all, v_all, p_drop, chunk, rng):
    """Online softmax over the chunks a query block sees: (out rows, lse rows (.., 1))."""
    q_rows = scores.q_rows
    B, Hk, rows, _ = q_rows.shape
    m = torch.full((B, Hk, rows, 1), float("-inf"), device=q_rows.device)
    l = torch.zeros((B, Hk, rows, 1), device=q_rows.device)
    acc = torch.zeros((B, Hk, rows, v_all.shape[-1]), device=q_rows.device)
    for start, stop in scores.chunks(chunk):
        s, _, masked = scores.tile(k_all[:, :, start:stop], start)
        # -- online softmax: raise the running max, rescale what we have --
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = _exp(s - _safe(m_new), masked)
        alpha = torch.exp(m - _safe(m_new))
        l = l * alpha + p.sum(-1, keepdim=True)
        if p_drop > 0:
            p = p * _keep_mask(rng, scores, start, p.shape, p_drop) / (1.0 - p_drop)
        acc = acc * alpha + torch.matmul(p, v_all[:, :, start:stop])
        m = m_new
    empty = l == 0
    out = torch.where(empty, 0.0, acc / torch.where(empty, 1.0, l))
    return out, torch.where(empty, float("-inf"), _safe(m) + torch.log(l))


def _dequantised(q, k, v, descales):
    """FP8 q, k, v as float32 times their per-(batch, KV head) descales, (B, S, H, D)."""
    B, _, H, _ = q.shape
    groups = H // k.shape[2]
    dq, dk, dv = (d.float() for d in descales)
    return (q.float() * dq.repeat_interleave(groups, dim=1).view(B, 1, H, 1),
            k.float() * dk.view(B, 1, -1, 1), v.float() * dv.view(B, 1, -1, 1))


def _probs_block(scores, k_all, lse, p_drop, chunk, rng):
    """flash_attn's S_dmask for a query block: softmax probs, negated where dropout
    dropped them; 0 outside the chunks the block sees."""
    B, Hk, rows, _ = lse.shape
    out = torch.zeros((B, Hk, rows, k_all.shape[2]), device=lse.device)
    for start, stop in scores.chunks(chunk):
        s, _, masked = scores.tile(k_all[:, :, start:stop], start)
        p = _exp(s - _safe(lse), masked)
        if p_drop > 0:
            p = torch.where(_keep_mask(rng, scores, start, p.shape, p_drop), p, -p)
        out[..., start:stop] = p
    return out


# ----------------------------------------------------------------------------- backward


def _backward_item(dout, q, k, v, out, lse, opts, seed, item):
    """Recompute the score tiles; returns dq, dk, dv in float32 (ATen's: the inputs' dtypes)."""
    if aten_cpu.covers(q, k, opts, return_probs=False):
        return aten_cpu.backward(dout, q, k, v, out, lse, opts)
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    G = H // Hk
    q5, do5, k_all, v_all = _groups(q, Hk), _groups(dout, Hk), _kv_heads(k), _kv_heads(v)
    delta5 = (do5 * _groups(out, Hk)).sum(-1, keepdim=True)  # rowsum(dO * O)
    lse5 = _safe(lse.float().reshape(B, Hk, G, Sq, 1))
    dq = torch.zeros_like(q5)
    dk, dv = torch.zeros_like(k_all), torch.zeros((B, Hk, Sk, v.shape[-1]), device=q.device)
    block, chunk = tiling(B * H, Sq, Sk)
    for queries in _blocks(Sq, block):
        scores = _scores(_block_rows(q5, queries), queries, Sq, Sk, opts)
        rows = (_block_rows(x, queries) for x in (do5, lse5, delta5))
        dq_rows = _backward_block(scores, *rows, k_all, v_all, dk, dv, opts, chunk,
                                  (seed, item))
        dq[:, :, :, queries] = _unstack(dq_rows, G)
    return dq.reshape(B, H, Sq, D).permute(0, 2, 1, 3), dk.permute(0, 2, 1, 3), \
        dv.permute(0, 2, 1, 3)


def _backward_block(scores, do_rows, lse_rows, delta, k_all, v_all, dk, dv, opts, chunk,
                    rng):
    """One query block's dq; adds its share into dk and dv (fixed order: deterministic)."""
    p_drop, scale = opts["dropout_p"], opts["softmax_scale"]
    q_rows = scores.q_rows
    dq = torch.zeros_like(q_rows)
    for start, stop in scores.chunks(chunk):
        s, t, masked = scores.tile(k_all[:, :, start:stop], start)
        p = _exp(s - lse_rows, masked)  # (B, Hk, rows, C)
        dp = torch.matmul(do_rows, v_all[:, :, start:stop].transpose(-1, -2))
        if p_drop > 0:
            keep = _keep_mask(rng, scores, start, p.shape, p_drop) / (1.0 - p_drop)
            pd, dp = p * keep, dp * keep
        else:
            pd = p
        dv[:, :, start:stop] += torch.matmul(pd.transpose(-1, -2), do_rows)
        ds = p * (dp - delta)
        if t is not None:
            ds = ds * (1.0 - t * t)  # d/ds of cap * tanh(s / cap)
        dq += torch.matmul(ds, k_all[:, :, start:stop]) * scale
        dk[:, :, start:stop] += torch.matmul(ds.transpose(-1, -2), q_rows) * scale
    return dq


# ----------------------------------------------------------------------------- launchers


def _items(cu_seqlens_q, cu_seqlens_k):
    """(item, q slice, k slice) for every sequence of a varlen batch."""
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        if cq[b + 1] > cq[b]:  # a sequence without queries has nothing to compute
            yield b, slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])


def _options(softmax_scale, window_left, window_right, softcap, alibi_slopes, dropout_p):
    return dict(softmax_scale=softmax_scale, window_left=window_left,
                window_right=window_right, softcap=softcap, alibi_slopes=alibi_slopes,
                dropout_p=dropout_p)


def attention_forward(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      softmax_scale, window_left, window_right, softcap, alibi_slopes,
                      dropout_p, seed, return_probs, fp32_precision="tf32", descales=None):
    """Forward pass; see `flashtile.kernels.attention_forward` for the contract.

    `fp32_precision` is accepted for symmetry: this path always multiplies in
    full float32. `descales` (fp8 inputs): None (all ones) or float32 (B, Hk)
    tensors (q_descale, k_descale, v_descale), B = sequences for varlen.
    """
    seed_value = int(seed.item()) if seed is not None else 0
    opts = _options(softmax_scale, window_left, window_right, softcap, alibi_slopes, dropout_p)
    out_dtype = FP8_OUT_DTYPE if q.dtype in FP8_DTYPES else q.dtype
    if q.dtype not in FP8_DTYPES:
        descales = None
    if cu_seqlens_q is None and q.shape[1] == 0:  # no queries: empty outputs
        B, _, H, _ = q.shape
        probs = q.new_zeros(B, H, 0, k.shape[1], dtype=torch.float32) if return_probs else None
        return (torch.empty(q.shape, dtype=out_dtype, device=q.device),
                q.new_empty(B, H, 0, dtype=torch.float32), probs)
    if cu_seqlens_q is None:
        out, lse, probs = _forward_item(q, k, v, opts, seed_value, 0, return_probs, descales)
        return out.to(out_dtype), lse, probs
    H = q.shape[1]
    out = torch.zeros(q.shape, dtype=out_dtype, device=q.device)
    lse = torch.full((H, q.shape[0]), float("-inf"), device=q.device)
    probs = None
    if return_probs:
        probs = torch.zeros((len(cu_seqlens_q) - 1, H, max_seqlen_q, max_seqlen_k),
                            device=q.device)
    for b, sq, sk in _items(cu_seqlens_q, cu_seqlens_k):
        item_opts = dict(opts, alibi_slopes=_item_slopes(alibi_slopes, b))
        item_descales = None if descales is None else tuple(d[b : b + 1] for d in descales)
        o, l, p = _forward_item(q[None, sq], k[None, sk], v[None, sk], item_opts,
                                seed_value, b, return_probs, item_descales)
        out[sq], lse[:, sq] = o[0].to(out_dtype), l[0]
        if p is not None:
            probs[b, :, : p.shape[2], : p.shape[3]] = p[0]
    return out, lse, probs


def attention_backward(dout, q, k, v, out, lse, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                       max_seqlen_k, softmax_scale, window_left, window_right, softcap,
                       alibi_slopes, dropout_p, seed, deterministic=False, fp32_precision="tf32"):
    """Backward pass; always deterministic (no atomics, fixed chunk order)."""
    seed_value = int(seed.item()) if seed is not None else 0
    opts = _options(softmax_scale, window_left, window_right, softcap, alibi_slopes, dropout_p)
    if cu_seqlens_q is None and q.shape[1] == 0:  # no queries: nothing flows back
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if cu_seqlens_q is None:
        grads = _backward_item(dout, q, k, v, out, lse, opts, seed_value, 0)
        return tuple(g.to(x.dtype) for g, x in zip(grads, (q, k, v)))
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for b, sq, sk in _items(cu_seqlens_q, cu_seqlens_k):
        item_opts = dict(opts, alibi_slopes=_item_slopes(alibi_slopes, b))
        g = _backward_item(dout[None, sq], q[None, sq], k[None, sk], v[None, sk],
                           out[None, sq], lse[None, :, sq], item_opts, seed_value, b)
        dq[sq], dk[sk], dv[sk] = (x[0].to(dq.dtype) for x in g)
    return dq, dk, dv


def _item_slopes(alibi_slopes, b):
    return None if alibi_slopes is None else alibi_slopes[b : b + 1]

