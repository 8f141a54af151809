"""flash_attn_with_kvcache: attention of new queries against a (paged) KV cache.

Appends the new keys/values to the cache in place (one vectorised index_put,
no host sync), applies rotary embeddings, then:

* Triton backend (CUDA tensors, or CPU under TRITON_INTERPRET=1): the split-KV
  decoding kernel `flashtile.kernels.decode.decode_attention` reads K/V straight
  from the (paged) cache, with the query heads of a KV group packed into one
  tile and the key range split over programs (`num_splits`), merged by LSE.
* PyTorch backend: gathers each sequence's live keys into a packed batch and
  runs the exact varlen path (`num_splits` has no effect there).
"""

from __future__ import annotations

import math

import torch

from flashtile import backend
from flashtile.interface import _attention
from flashtile.rotary import apply_rotary
from flashtile.validation import (SUPPORTED_DTYPES, check_options, check_qkv, check_tensor,
                                  contiguous_last_dim)


def _as_lengths(name, value, batch, device) -> torch.Tensor:
    if isinstance(value, int):
        return torch.full((batch,), value, dtype=torch.int32, device=device)
    check_tensor(name, value, ndim=1)
    if value.dtype != torch.int32 or value.shape[0] != batch:
        raise TypeError(f"flashtile: `{name}` must be an int or an int32 tensor of shape "
                        f"({batch},), got {value.dtype} {tuple(value.shape)}")
    return value.to(device)


def _cache_slots(pos, batch_idx, block_table, page):
    """Cache (row, column) indices of positions pos (B', S) of B' sequences whose
    cache rows are batch_idx (B',), or, paged, whose pages are block_table (B', P)."""
    if block_table is None:
        return batch_idx.long().view(-1, 1).expand_as(pos), pos
    return block_table.long().gather(1, pos // page), pos % page


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
            Positions are indices in the cache row (``cache_leftpad`` does not
            shift them), as in flash_attn.
        cache_seqlens: int or (batch,) int32, keys already in the cache (None =
            the whole cache).
        cache_batch_idx: (batch,) int32, the cache row of each sequence.
        cache_leftpad: (batch,) int32, where each sequence's keys start.
        block_table: (batch, max_pages) int32 page indices.
        num_splits: Triton backend: 0 = pick from the shape and the SM count, 1 = no
            split, n = split each sequence's key range into n chunks merged by
            LSE. The PyTorch path ignores it (exact either way).
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
    if block_table is not None:
        check_tensor("block_table", block_table, ndim=2)
        if block_table.dtype != torch.int32:
            raise TypeError(f"flashtile: `block_table` must be an int32 tensor, got "
                            f"{block_table.dtype}")
    batch, seqlen_q, device = q.shape[0], q.shape[1], q.device
    use_kernel = backend.resolve(device) == "triton"
    with torch.no_grad():
        # Only what is needed is materialised: on the kernel path a decode step with
        # cache_seqlens given and no new keys launches nothing but the kernel(s).
        batch_idx = leftpad = None
        if cache_batch_idx is not None:
            batch_idx = _as_lengths("cache_batch_idx", cache_batch_idx, batch, device)
        if cache_leftpad is not None:
            leftpad = _as_lengths("cache_leftpad", cache_leftpad, batch, device)
        full = k_cache.shape[1] * (block_table.shape[1] if block_table is not None else 1)
        seqlens = _as_lengths("cache_seqlens", full if cache_seqlens is None else cache_seqlens,
                              batch, device)
        rotate = rotary_cos is not None
        if rotate:  # rotary position of the next key: its index in the cache row, as in
            # flash_attn (left padding does not shift positions)
            start = seqlens.long().view(batch, 1)
        if k is not None:
            check_qkv(q, k, v, varlen=False)
            if rotate:
                steps = torch.arange(k.shape[1], device=device).view(1, -1)
                k = apply_rotary(k, rotary_cos, rotary_sin, start + steps, rotary_interleaved)
            _append(k_cache, v_cache, k, v, seqlens, batch_idx, block_table)
            seqlens = seqlens + k.shape[1]
        if rotate:
            local = causal or tuple(window_size) != (-1, -1)
            steps = torch.arange(seqlen_q, device=device).view(1, -1) * int(local)
            q = apply_rotary(q, rotary_cos, rotary_sin, start + steps, rotary_interleaved)
        if use_kernel:
            out, lse = _decode(q, k_cache, v_cache, seqlens, leftpad, batch_idx, block_table,
                               softmax_scale, causal, window_size, softcap, alibi_slopes,
                               num_splits)
            return (out, lse) if return_softmax_lse else out
        if batch * seqlen_q == 0:  # nothing to attend with (the append above still ran)
            out = torch.empty_like(q)
            lse = torch.empty(batch, q.shape[2], seqlen_q, device=device)
            return (out, lse) if return_softmax_lse else out
        if batch_idx is None:
            batch_idx = torch.arange(batch, dtype=torch.int32, device=device)
        if leftpad is None:
            leftpad = torch.zeros(batch, dtype=torch.int32, device=device)
        keys, values, cu_k, max_k = _gather(k_cache, v_cache, leftpad, seqlens, batch_idx,
                                            block_table)
        cu_q = torch.arange(0, (batch + 1) * seqlen_q, seqlen_q, dtype=torch.int32,
                            device=device)
        out, lse, _ = _attention(
            q.reshape(batch * seqlen_q, *q.shape[2:]), keys, values, cu_q, cu_k, seqlen_q,
            max_k, 0.0, softmax_scale, causal, window_size, softcap, alibi_slopes, False, True)
    out = out.view(batch, seqlen_q, *out.shape[1:])
    if return_softmax_lse:
        return out, lse.view(lse.shape[0], batch, seqlen_q).transpose(0, 1).contiguous()
    return out


def _decode(q, k_cache, v_cache, seqlens, leftpad, batch_idx, block_table, softmax_scale,
            causal, window_size, softcap, alibi_slopes, num_splits):
    """Validate and run the split-KV kernel on the cache itself (no gather)."""
    from flashtile.kernels.decode import decode_attention

    batch, _, heads, head_dim = q.shape
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"flashtile: `q` must be float16, bfloat16 or float32, got {q.dtype}")
    for name, x in (("k_cache", k_cache), ("v_cache", v_cache)):
        if x.dtype != q.dtype:
            raise TypeError(f"flashtile: `{name}` must have q's dtype {q.dtype}, got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"flashtile: `{name}` must be on {q.device}, got {x.device}")
        if x.stride(-1) != 1:
            raise ValueError(f"flashtile: `{name}` must be contiguous in its last dim")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"flashtile: `v_cache` must have k_cache's shape "
                         f"{tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"flashtile: `k_cache` must have head dim {head_dim} like q, got "
                         f"{k_cache.shape[3]}")
    if head_dim > 256 or head_dim == 0:
        raise NotImplementedError(f"flashtile: head dim {head_dim} is not supported (1-256)")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"flashtile: the number of query heads ({heads}) must be divisible "
                         f"by the number of key/value heads ({kv_heads})")
    if block_table is not None:
        if block_table.shape[0] != batch:
            raise ValueError(f"flashtile: `block_table` must have {batch} rows, got "
                             f"{block_table.shape[0]}")
        block_table = block_table.to(q.device)
        if block_table.stride(-1) != 1:
            block_table = block_table.contiguous()
    window_left, window_right = check_options(
        dropout_p=0.0, window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
        batch=batch, heads=heads, device=q.device, softmax_scale=softmax_scale)
    if causal:
        window_right = 0
    if alibi_slopes is not None and alibi_slopes.dim() == 1:
        alibi_slopes = alibi_slopes.unsqueeze(0).expand(batch, heads)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    return decode_attention(
        contiguous_last_dim(q), k_cache, v_cache, seqlens.contiguous(),
        cache_leftpad=None if leftpad is None else leftpad.contiguous(),
        cache_batch_idx=None if batch_idx is None else batch_idx.contiguous(),
        block_table=block_table, softmax_scale=scale, window_left=window_left,
        window_right=window_right, softcap=float(softcap), alibi_slopes=alibi_slopes,
        num_splits=num_splits, fp32_precision=backend.get_fp32_precision())


def _append(k_cache, v_cache, k, v, seqlens, batch_idx, block_table):
    """Write the new keys/values at positions seqlens[b] ... of each sequence
    (one index_put per cache, no host sync)."""
    pos = seqlens.long().view(-1, 1) + torch.arange(k.shape[1], device=k.device)  # (B, Sn)
    if block_table is None and batch_idx is None:
        batch_idx = torch.arange(k.shape[0], device=k.device)
    rows, cols = _cache_slots(pos, batch_idx, block_table, k_cache.shape[1])
    k_cache[rows, cols] = k.to(k_cache.dtype)
    v_cache[rows, cols] = v.to(v_cache.dtype)


def _gather(k_cache, v_cache, leftpad, seqlens, batch_idx, block_table):
    """Pack each sequence's live keys [leftpad, seqlen) into (total_k, Hk, D)."""
    keys, values, lengths = [], [], [0]
    for b, (lo, hi) in enumerate(zip(leftpad.tolist(), seqlens.tolist())):
        pos = torch.arange(lo, hi, device=k_cache.device).view(1, -1)
        rows, cols = _cache_slots(pos, batch_idx[b:b + 1], None if block_table is None
                                  else block_table[b:b + 1], k_cache.shape[1])
        rows, cols = rows[0], cols[0]
        keys.append(k_cache[rows, cols])
        values.append(v_cache[rows, cols])
        lengths.append(hi - lo)
    cu = torch.tensor(lengths, device=k_cache.device).cumsum(0).to(torch.int32)
    return torch.cat(keys), torch.cat(values), cu, max(lengths)
