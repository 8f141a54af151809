"""The exact attention path in plain PyTorch: CPUs and any device without Triton.

Same algorithm as the kernels, written with tensor ops: an online softmax over
chunks of keys in the forward pass and a backward pass that recomputes the
scores chunk by chunk from Q, K, V, O and the LSE. Memory grows as
O(rows x chunk), never O(Sq x Sk). Arithmetic is float32 whatever the input
dtype. The two launchers mirror `flashtile.kernels` argument for argument.

Shapes inside this module: rows of all query heads that share a KV head are
stacked, so a score tile is (B, Hk, G*Sq, C) with G = H // Hk. That is how GQA
works here without repeating K and V.

The plain cases on CPU tensors (no dropout, window, softcap, ALiBi or returned
probabilities) go to ATen's CPU flash kernel instead (`flashtile.aten_cpu`):
the same function, 5-13x faster than the chunks here.

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
# than the per-chunk Python overhead (measured ~10x faster than 16 MiB tiles at
# 1k x 1k x 4 heads).
_TILE_ELEMENTS = 1 << 18


# ----------------------------------------------------------------------------- layout


def _to_rows(x: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """(B, S, H, D) -> (B, Hk, G*S, D) float32, the query heads of a group stacked."""
    B, S, H, D = x.shape
    x = x.float().permute(0, 2, 1, 3)  # (B, H, S, D)
    return x.reshape(B, n_kv_heads, (H // n_kv_heads) * S, D)


def _from_rows(x: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(B, Hk, G*S, D) -> (B, S, H, D), inverse of `_to_rows`."""
    B, Hk, GS, D = x.shape
    return x.reshape(B, Hk * (GS // seqlen), seqlen, D).permute(0, 2, 1, 3)


def _kv_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, S, Hk, D) -> (B, Hk, S, D) float32."""
    return x.float().permute(0, 2, 1, 3)


def key_chunk(tiles: int, rows: int, seqlen_k: int) -> int:
    """Keys per chunk; a pure function of the shapes so both passes agree
    (the dropout mask of a chunk is drawn from a seed keyed on its start)."""
    chunk = _TILE_ELEMENTS // max(1, tiles * rows)
    chunk = max(16, min(chunk, seqlen_k)) // 16 * 16
    return max(chunk, 16)


# ----------------------------------------------------------------------------- scores


class _Scores:
    """Computes masked score tiles for one (item, options) combination."""

    def __init__(self, q_rows, seqlen_q, seqlen_k, n_kv_heads, scale, window_left,
                 window_right, softcap, alibi_slopes):
        B, Hk, rows, _ = q_rows.shape
        device = q_rows.device
        self.q_rows, self.scale, self.softcap = q_rows, scale, softcap
        self.window = (window_left, window_right)
        # Row r of a group is query i = r % Sq; `diag` is the key it lines up
        # with when the mask is aligned to the bottom-right corner.
        i = torch.arange(rows, device=device) % max(seqlen_q, 1)
        self.diag = (i + seqlen_k - seqlen_q).view(rows, 1)  # (rows, 1)
        self.seqlen_k = seqlen_k
        self.slopes = None
        if alibi_slopes is not None:
            g = rows // max(seqlen_q, 1)
            slopes = alibi_slopes.float().reshape(-1, Hk, g, 1)  # (B or 1, Hk, G, 1)
            self.slopes = slopes.expand(-1, Hk, g, seqlen_q).reshape(-1, Hk, rows, 1)

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


def _keep_mask(seed: int, item: int, start: int, shape, p: float, device) -> torch.Tensor:
    """Dropout keep-mask for one key chunk, reproducible from (seed, item, start)."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + item * 10_007 + start) % (1 << 63))
    return torch.rand(shape, generator=gen, device=device) >= p


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
    if aten_cpu.covers(q, k, opts, return_probs):
        if descales is not None:
            q, k, v = _dequantised(q, k, v, descales)
        out, lse = aten_cpu.forward(q, k, v, opts)
        return out, lse, None
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    p_drop = opts["dropout_p"]
    q_rows = _to_rows(q, Hk)
    k_all, v_all = _kv_heads(k), _kv_heads(v)
    if descales is not None:  # rows and KV heads are both (B, Hk, ., D)
        q_rows, k_all, v_all = (x * d.float().view(B, Hk, 1, 1)
                                for x, d in zip((q_rows, k_all, v_all), descales))
    scores = _Scores(q_rows, Sq, Sk, Hk, opts["softmax_scale"], opts["window_left"],
                     opts["window_right"], opts["softcap"], opts["alibi_slopes"])
    rows = q_rows.shape[2]
    m = torch.full((B, Hk, rows, 1), float("-inf"), device=q.device)
    l = torch.zeros((B, Hk, rows, 1), device=q.device)
    acc = torch.zeros((B, Hk, rows, v.shape[-1]), device=q.device)
    chunk = key_chunk(B * Hk, rows, Sk)
    for start in range(0, Sk, chunk):
        stop = min(start + chunk, Sk)
        s, _, masked = scores.tile(k_all[:, :, start:stop], start)
        # -- online softmax: raise the running max, rescale what we have --
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = _exp(s - _safe(m_new), masked)
        alpha = torch.exp(m - _safe(m_new))
        l = l * alpha + p.sum(-1, keepdim=True)
        if p_drop > 0:
            keep = _keep_mask(seed, item, start, p.shape, p_drop, q.device)
            p = p * keep / (1.0 - p_drop)
        acc = acc * alpha + torch.matmul(p, v_all[:, :, start:stop])
        m = m_new
    empty = l == 0
    out = torch.where(empty, 0.0, acc / torch.where(empty, 1.0, l))
    lse = torch.where(empty, float("-inf"), _safe(m) + torch.log(l)).squeeze(-1)
    probs = None
    if return_probs:
        probs = _probs(scores, k_all, lse, p_drop, seed, item, chunk, Sq, H)
    return _from_rows(out, Sq), lse.reshape(B, H, Sq), probs


def _dequantised(q, k, v, descales):
    """FP8 q, k, v as float32 times their per-(batch, KV head) descales, (B, S, H, D)."""
    B, _, H, _ = q.shape
    groups = H // k.shape[2]
    dq, dk, dv = (d.float() for d in descales)
    return (q.float() * dq.repeat_interleave(groups, dim=1).view(B, 1, H, 1),
            k.float() * dk.view(B, 1, -1, 1), v.float() * dv.view(B, 1, -1, 1))


def _probs(scores, k_all, lse, p_drop, seed, item, chunk, Sq, H):
    """flash_attn's S_dmask: softmax probs, negated where dropout dropped them."""
    B, Hk, rows = lse.shape
    Sk = k_all.shape[2]
    out = torch.empty((B, Hk, rows, Sk), device=lse.device)
    for start in range(0, Sk, chunk):
        s, _, masked = scores.tile(k_all[:, :, start:start + chunk], start)
        p = _exp(s - _safe(lse).unsqueeze(-1), masked)
        if p_drop > 0:
            keep = _keep_mask(seed, item, start, p.shape, p_drop, lse.device)
            p = torch.where(keep, p, -p)
        out[..., start:start + chunk] = p
    return out.reshape(B, H, Sq, Sk)


# ----------------------------------------------------------------------------- backward


def _backward_item(dout, q, k, v, out, lse, opts, seed, item):
    """Recompute scores per key chunk; returns dq, dk, dv in float32 (ATen's: the inputs' dtypes)."""
    if aten_cpu.covers(q, k, opts, return_probs=False):
        return aten_cpu.backward(dout, q, k, v, out, lse, opts)
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    p_drop, scale, cap = opts["dropout_p"], opts["softmax_scale"], opts["softcap"]
    q_rows = _to_rows(q, Hk)
    do_rows = _to_rows(dout, Hk)
    k_all, v_all = _kv_heads(k), _kv_heads(v)
    rows = q_rows.shape[2]
    lse_rows = _safe(lse.float().reshape(B, Hk, rows, 1))
    delta = (do_rows * _to_rows(out, Hk)).sum(-1, keepdim=True)  # rowsum(dO * O)
    scores = _Scores(q_rows, Sq, Sk, Hk, scale, opts["window_left"], opts["window_right"],
                     cap, opts["alibi_slopes"])
    dq = torch.zeros_like(q_rows)
    dk = torch.empty_like(k_all)
    dv = torch.empty((B, Hk, Sk, v.shape[-1]), device=q.device)
    chunk = key_chunk(B * Hk, rows, Sk)
    for start in range(0, Sk, chunk):
        stop = min(start + chunk, Sk)
        s, t, masked = scores.tile(k_all[:, :, start:stop], start)
        p = _exp(s - lse_rows, masked)  # (B, Hk, rows, C)
        dp = torch.matmul(do_rows, v_all[:, :, start:stop].transpose(-1, -2))
        if p_drop > 0:
            keep = _keep_mask(seed, item, start, p.shape, p_drop, q.device) / (1.0 - p_drop)
            pd, dp = p * keep, dp * keep
        else:
            pd = p
        dv[:, :, start:stop] = torch.matmul(pd.transpose(-1, -2), do_rows)
        ds = p * (dp - delta)
        if t is not None:
            ds = ds * (1.0 - t * t)  # d/ds of cap * tanh(s / cap)
        dq += torch.matmul(ds, k_all[:, :, start:stop]) * scale
        dk[:, :, start:stop] = torch.matmul(ds.transpose(-1, -2), q_rows) * scale
    return _from_rows(dq, Sq), dk.permute(0, 2, 1, 3), dv.permute(0, 2, 1, 3)


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

