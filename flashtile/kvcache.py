"""flash_attn_with_kvcache: attention of new queries against a (paged) KV cache.

This version appends to the cache in place, applies rotary embeddings, gathers
each sequence's live keys into a packed batch and runs the varlen attention
path (Triton on CUDA, PyTorch elsewhere). It is exact on every device; the
split-KV decoding kernel for long caches is a separate piece of work.
"""

from __future__ import annotations

import torch

from flashtile.interface import _attention
from flashtile.rotary import apply_rotary
from flashtile.validation import check_qkv, check_tensor


def _as_lengths(name, value, batch, device) -> torch.Tensor:
    if isinstance(value, int):
        return torch.full((batch,), value, dtype=torch.int32, device=device)
    check_tensor(name, value, ndim=1)
    if value.dtype != torch.int32 or value.shape[0] != batch:
        raise TypeError(f"flashtile: `{name}` must be an int or an int32 tensor of shape "
                        f"({batch},), got {value.dtype} {tuple(value.shape)}")
    return value.to(device)


class _CacheSlots:
    """Maps (sequence b, position t) to the cache's (row, column) indices."""

    def __init__(self, cache_shape, batch_idx, block_table):
        self.block_table, self.batch_idx = block_table, batch_idx
        self.page = cache_shape[1]

    def __call__(self, b: int, positions: torch.Tensor):
        if self.block_table is None:
            return self.batch_idx[b].long().expand_as(positions), positions
        pages = self.block_table[b, positions // self.page].long()
        return pages, positions % self.page


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None,
                            rotary_sin=None, cache_seqlens=None, cache_batch_idx=None,
                            cache_leftpad=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False):
    """flash_attn 2.x's decoding/prefill entry point (forward only, no autograd).

    Args:
        q: (batch, seqlen_q, nheads, headdim).
        k_cache, v_cache: (batch_cache, seqlen_cache, nheads_k, headdim), or paged
            (num_blocks, page_size, nheads_k, headdim) with `block_table`.
        k, v: optional new keys/values (batch, seqlen_new, nheads_k, headdim),
            written into the cache IN PLACE at positions ``cache_seqlens[b] ...``.
        rotary_cos, rotary_sin: optional (seqlen_ro, rotary_dim / 2); rotate new k at
            its positions, and q at positions ``cache_seqlens ...`` when causal or
            windowed, else all of q at position ``cache_seqlens`` (flash_attn's rule).
            Positions count from ``cache_leftpad``.
        cache_seqlens: int or (batch,) int32, keys already in the cache (None =
            the whole cache).
        cache_batch_idx: (batch,) int32, the cache row of each sequence.
        cache_leftpad: (batch,) int32, where each sequence's keys start.
        block_table: (batch, max_pages) int32 page indices.
        num_splits: accepted for compatibility; this path does not split.
        Other arguments: as in `flash_attn_func`.

    Returns:
        out (batch, seqlen_q, nheads, headdim), and softmax_lse (batch, nheads,
        seqlen_q) float32 when return_softmax_lse.
    """
    check_tensor("q", q, ndim=4)
    check_tensor("k_cache", k_cache, ndim=4)
    check_tensor("v_cache", v_cache, ndim=4)
    if (k is None) != (v is None):
        raise ValueError("flashtile: pass both `k` and `v` (new keys and values) or neither")
    if not isinstance(num_splits, int) or num_splits < 0:
        raise ValueError(f"flashtile: `num_splits` must be an int >= 0, got {num_splits}")
    batch, seqlen_q, device = q.shape[0], q.shape[1], q.device
    with torch.no_grad():
        slots = _CacheSlots(k_cache.shape, _as_lengths(
            "cache_batch_idx", torch.arange(batch, dtype=torch.int32, device=device)
            if cache_batch_idx is None else cache_batch_idx, batch, device), block_table)
        full = k_cache.shape[1] * (block_table.shape[1] if block_table is not None else 1)
        seqlens = _as_lengths("cache_seqlens", full if cache_seqlens is None else cache_seqlens,
                              batch, device)
        leftpad = _as_lengths("cache_leftpad", 0 if cache_leftpad is None else cache_leftpad,
                              batch, device)
        start = (seqlens - leftpad).long().view(batch, 1)  # rotary position of the next key
        rotate = rotary_cos is not None
        if k is not None:
            check_qkv(q, k, v, varlen=False)
            steps = torch.arange(k.shape[1], device=device).view(1, -1)
            if rotate:
                k = apply_rotary(k, rotary_cos, rotary_sin, start + steps, rotary_interleaved)
            _append(k_cache, v_cache, k, v, seqlens, slots)
            seqlens = seqlens + k.shape[1]
        if rotate:
            local = causal or tuple(window_size) != (-1, -1)
            steps = torch.arange(seqlen_q, device=device).view(1, -1) * int(local)
            q = apply_rotary(q, rotary_cos, rotary_sin, start + steps, rotary_interleaved)
        keys, values, cu_k, max_k = _gather(k_cache, v_cache, leftpad, seqlens, slots)
        cu_q = torch.arange(0, (batch + 1) * seqlen_q, seqlen_q, dtype=torch.int32,
                            device=device)
        out, lse, _ = _attention(
            q.reshape(batch * seqlen_q, *q.shape[2:]), keys, values, cu_q, cu_k, seqlen_q,
            max_k, 0.0, softmax_scale, causal, window_size, softcap, alibi_slopes, False, True)
    out = out.view(batch, seqlen_q, *out.shape[1:])
    if return_softmax_lse:
        return out, lse.view(lse.shape[0], batch, seqlen_q).transpose(0, 1)
    return out


def _append(k_cache, v_cache, k, v, seqlens, slots):
    """Write the new keys/values at positions seqlens[b] ... of each sequence."""
    for b, n in enumerate(seqlens.tolist()):
        rows, cols = slots(b, torch.arange(n, n + k.shape[1], device=k.device))
        k_cache[rows, cols] = k[b].to(k_cache.dtype)
        v_cache[rows, cols] = v[b].to(v_cache.dtype)


def _gather(k_cache, v_cache, leftpad, seqlens, slots):
    """Pack each sequence's live keys [leftpad, seqlen) into (total_k, Hk, D)."""
    keys, values, lengths = [], [], [0]
    for b, (lo, hi) in enumerate(zip(leftpad.tolist(), seqlens.tolist())):
        rows, cols = slots(b, torch.arange(lo, hi, device=k_cache.device))
        keys.append(k_cache[rows, cols])
        values.append(v_cache[rows, cols])
        lengths.append(hi - lo)
    cu = torch.tensor(lengths, device=k_cache.device).cumsum(0).to(torch.int32)
    return torch.cat(keys), torch.cat(values), cu, max(lengths)
