"""The public API: flash_attn 2.x's functions, signatures and return conventions.

Switching from flash_attn is one import line::

    from flashtile import flash_attn_func, flash_attn_varlen_func

Every function validates its inputs (`flashtile.validation`), folds the packed
variants into one implementation by reshaping, and calls the custom ops of
`flashtile.autograd`, which run the Triton kernels on CUDA tensors and the
exact PyTorch path elsewhere (`flashtile.backend`).
"""

from __future__ import annotations

import math

import torch

from flashtile import autograd, backend
from flashtile.validation import (
    check_cu_seqlens,
    check_fp8,
    check_options,
    check_packed,
    check_qkv,
    check_tensor,
    contiguous_last_dim,
)


def _attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
               softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
               return_attn_probs, fp8_descales=None):
    """Shared body of every attention entry point (dense when cu_seqlens_q is None).

    `fp8_descales`: the caller's (q_descale, k_descale, v_descale), each None or a
    tensor, from entry points that take FP8 inputs; None rejects fp8 inputs.
    """
    varlen = cu_seqlens_q is not None
    allow_fp8 = fp8_descales is not None
    # before any tensor method is called on q, k, v
    check_qkv(q, k, v, varlen=varlen, allow_fp8=allow_fp8)
    q, k, v = (contiguous_last_dim(x) for x in (q, k, v))
    if varlen:  # before cu_seqlens_q.shape is read below
        check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q,
                         "max_seqlen_q", q.device)
        check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k,
                         "max_seqlen_k", q.device)
        if cu_seqlens_k.shape != cu_seqlens_q.shape:
            raise ValueError(f"flashtile: `cu_seqlens_k` must have the length of "
                             f"`cu_seqlens_q` ({cu_seqlens_q.shape[0]}), got "
                             f"{cu_seqlens_k.shape[0]}")
    else:
        max_seqlen_q, max_seqlen_k = q.shape[1], k.shape[1]
    batch = cu_seqlens_q.shape[0] - 1 if varlen else q.shape[0]
    heads = q.shape[-2]
    window_left, window_right = check_options(
        dropout_p=dropout_p, window_size=window_size, softcap=softcap,
        alibi_slopes=alibi_slopes, batch=batch, heads=heads, device=q.device,
        softmax_scale=softmax_scale)
    # None, or (q_descale, k_descale, v_descale) float32 (batch, Hk) for fp8 inputs
    descales = check_fp8(q, k, v, *(fp8_descales or (None, None, None)), batch=batch,
                         dropout_p=dropout_p, return_attn_probs=return_attn_probs)
    if causal:
        window_right = 0  # causal = a window with no keys to the right of the diagonal
    if alibi_slopes is not None and alibi_slopes.dim() == 1:
        alibi_slopes = alibi_slopes.unsqueeze(0).expand(batch, heads)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    seed = None
    if dropout_p > 0:
        # Drawn from torch's RNG, so torch.manual_seed makes dropout reproducible.
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64, device=q.device)
    # As in flash_attn, S_dmask (O(Sq x Sk) memory) is built only when there is a
    # dropout pattern to report; without dropout return_attn_probs just adds the LSE.
    return_probs = bool(return_attn_probs) and dropout_p > 0
    out, lse, probs = autograd.attention(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
        window_left, window_right, float(softcap), alibi_slopes, float(dropout_p), seed,
        return_probs, backend.get_fp32_precision(), bool(deterministic),
        *(descales if descales is not None else (None, None, None)))
    return (out, lse, probs if return_probs else None) if return_attn_probs else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False, *, q_descale=None, k_descale=None,
                    v_descale=None):
    """Exact attention softmax(q kᵀ · softmax_scale) v, flash_attn 2.x compatible.

    Multi-query and grouped-query attention: k and v may have fewer heads than q;
    the number of query heads must be divisible by the number of KV heads, and
    query heads ``h * H // Hk ... (h + 1) * H // Hk - 1`` use KV head ``h``
    (with 6 query heads and 2 KV heads, heads 0, 1, 2 use KV head 0).

    causal=True masks keys after the query, aligned to the bottom-right corner
    when seqlen_q != seqlen_k. With seqlen_q = 2, seqlen_k = 5 (1 = kept)::

        1 1 1 1 0
        1 1 1 1 1

    and with seqlen_q = 5, seqlen_k = 2::

        0 0
        0 0
        0 0
        1 0
        1 1

    A query row that sees no key gives output 0 (and LSE -inf).
    window_size=(left, right) != (-1, -1) is sliding-window (local) attention:
    query i sees key j when
    ``i + seqlen_k - seqlen_q - left <= j <= i + seqlen_k - seqlen_q + right``
    (-1 leaves that side unbounded; causal sets right = 0).

    Args:
        q: (batch, seqlen_q, nheads, headdim), float16, bfloat16 or float32, or
            float8_e4m3fn (FP8, forward only: see q_descale).
        k, v: (batch, seqlen_k, nheads_k, headdim), the dtype and device of q.
        dropout_p: probability of dropping an attention weight (use 0.0 in
            evaluation). Kept weights are scaled by 1 / (1 - dropout_p). The mask
            comes from a seed drawn from torch's RNG: ``torch.manual_seed`` makes it
            reproducible, and the backward pass regenerates the same mask.
        softmax_scale: scale of q kᵀ, default 1 / sqrt(headdim).
        causal: apply the bottom-right-aligned causal mask.
        window_size: (left, right) sliding window, -1 = unbounded.
        softcap: if > 0, scores become ``softcap * tanh(scores / softcap)`` before
            ALiBi and masking (Gemma-2 style).
        alibi_slopes: (nheads,) or (batch, nheads) float32; adds
            ``-slope * |i + seqlen_k - seqlen_q - j|`` to the score of query i, key j.
        deterministic: request a bitwise reproducible backward. Only the Hopper
            (sm_90) kernel for dense fp16 / bf16 at head dim 64 / 128 / 256 sums dQ with
            the copy engine's reduce-add, in an order that varies from run to run;
            True sends such calls to the Triton kernels (no atomics, 20-30%
            slower there). Every other path is reproducible either way.
        return_attn_probs: also return the LSE and the attention probabilities
            (for testing only: the probabilities are O(seqlen²) memory).
        q_descale, k_descale, v_descale: FP8 only (FlashAttention-3's convention):
            None (= 1.0) or float32 (batch, nheads_k) tensors on q's device. The
            scores become ``softmax_scale * (q · k) * q_descale[b, h // (nheads //
            nheads_k)] * k_descale[b, hk]`` and the output ``softmax(scores) @ v *
            v_descale[b, hk]``: each is the factor that turns the stored fp8 values
            back into real ones (`flashtile.quantize_fp8` makes them); they must
            be positive (the GPU kernel, like FlashAttention-3's, takes the row max
            on unscaled q · k; not checked, which would cost a sync). Passing one
            with non-fp8 inputs raises ValueError. FP8 is forward-only: dropout,
            return_attn_probs=True and inputs that require grad (with grad mode
            on) raise NotImplementedError.

    Returns:
        out: (batch, seqlen_q, nheads, headdim), the dtype of q (bfloat16 for fp8
        inputs).
        If return_attn_probs: ``(out, softmax_lse, S_dmask)`` where softmax_lse is
        (batch, nheads, seqlen_q) float32, the natural-log log-sum-exp of each row
        of scaled scores, and S_dmask is, when dropout_p > 0, (batch, nheads,
        seqlen_q, seqlen_k) float32: the softmax probabilities before dropout,
        negated where dropout dropped the weight (negative = dropped), as
        flash_attn encodes it; None without dropout (as in flash_attn, so asking
        for the LSE costs no O(seqlen²) memory).

    float32 inputs run through TF32 dots on the GPU by default;
    ``flashtile.set_fp32_precision("ieee")`` gives full float32 dots.
    """
    return _attention(q, k, v, None, None, None, None, dropout_p, softmax_scale, causal,
                      window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
                      (q_descale, k_descale, v_descale))


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False, *,
                              q_descale=None, k_descale=None, v_descale=None):
    """`flash_attn_func` with qkv packed as (batch, seqlen, 3, nheads, headdim).

    The gradient flows back into the packed tensor. FP8 descales are (batch, nheads).
    """
    check_packed("qkv", qkv, ndim=5, dim=2, size=3)
    q, k, v = qkv.unbind(dim=2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs,
                           q_descale=q_descale, k_descale=k_descale, v_descale=v_descale)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False, *,
                             q_descale=None, k_descale=None, v_descale=None):
    """`flash_attn_func` with kv packed as (batch, seqlen_k, 2, nheads_k, headdim)."""
    check_packed("kv", kv, ndim=5, dim=2, size=2)
    k, v = kv.unbind(dim=2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs,
                           q_descale=q_descale, k_descale=k_descale, v_descale=v_descale)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None, *,
                           q_descale=None, k_descale=None, v_descale=None):
    """`flash_attn_func` over a batch of sequences of different lengths, packed.

    Sequence b owns rows ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]`` of q and
    ``cu_seqlens_k[b]:cu_seqlens_k[b + 1]`` of k and v; causal and window masks
    are aligned to the bottom-right corner of each sequence's own (sq, sk) block.

    Args:
        q: (total_q, nheads, headdim); k, v: (total_k, nheads_k, headdim), or with
            `block_table` paged caches (num_blocks, page_size, nheads_k, headdim).
        cu_seqlens_q, cu_seqlens_k: int32 (batch + 1,), starting at 0, non-decreasing,
            ending at total_q / total_k.
        max_seqlen_q, max_seqlen_k: ints at least the longest sequence.
        block_table: optional int32 (batch, max_pages): page ``block_table[b, p]``
            holds keys ``p * page_size ...`` of sequence b.
        q_descale, k_descale, v_descale: FP8 descales, float32 (batch, nheads_k)
            with batch = the number of sequences (len(cu_seqlens_q) - 1).
        Other arguments: as in `flash_attn_func`.

    Returns:
        out (total_q, nheads, headdim); with return_attn_probs also softmax_lse
        (nheads, total_q) float32 and S_dmask (batch, nheads, max_seqlen_q,
        max_seqlen_k).
    """
    if block_table is not None:
        k, v = _gather_pages(k, v, block_table, cu_seqlens_k)
    return _attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                      deterministic, return_attn_probs, (q_descale, k_descale, v_descale))


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, *, q_descale=None,
                                     k_descale=None, v_descale=None):
    """`flash_attn_varlen_func` with qkv packed as (total, 3, nheads, headdim)."""
    check_packed("qkv", qkv, ndim=4, dim=1, size=3)
    q, k, v = qkv.unbind(dim=1)
    return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p, softmax_scale, causal, window_size, softcap,
                                  alibi_slopes, deterministic, return_attn_probs,
                                  q_descale=q_descale, k_descale=k_descale,
                                  v_descale=v_descale)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, dropout_p=0.0, softmax_scale=None,
                                    causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False, *, q_descale=None,
                                    k_descale=None, v_descale=None):
    """`flash_attn_varlen_func` with kv packed as (total_k, 2, nheads_k, headdim)."""
    check_packed("kv", kv, ndim=4, dim=1, size=2)
    k, v = kv.unbind(dim=1)
    return flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                  max_seqlen_k, dropout_p, softmax_scale, causal, window_size,
                                  softcap, alibi_slopes, deterministic, return_attn_probs,
                                  q_descale=q_descale, k_descale=k_descale,
                                  v_descale=v_descale)


def _gather_pages(k_cache, v_cache, block_table, cu_seqlens_k):
    """Paged caches -> packed (total_k, Hk, D) keys and values (differentiable)."""
    check_tensor("k", k_cache, ndim=4)
    check_tensor("v", v_cache, ndim=4)
    check_tensor("block_table", block_table, ndim=2)
    if block_table.dtype != torch.int32:
        raise TypeError(f"flashtile: `block_table` must be an int32 tensor, got "
                        f"{block_table.dtype}")
    check_tensor("cu_seqlens_k", cu_seqlens_k, ndim=1)
    if block_table.shape[0] != cu_seqlens_k.shape[0] - 1:
        raise ValueError(f"flashtile: `block_table` must have one row per sequence "
                         f"({cu_seqlens_k.shape[0] - 1}), got {block_table.shape[0]}")
    if block_table.numel() and not 0 <= int(block_table.min()) <= int(block_table.max()) \
            < k_cache.shape[0]:
        raise ValueError(f"flashtile: `block_table` entries must be page indices in "
                         f"[0, {k_cache.shape[0]}), got values in [{int(block_table.min())}, "
                         f"{int(block_table.max())}]")
    page = k_cache.shape[1]
    lengths = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).tolist()
    if max(lengths, default=0) > block_table.shape[1] * page:
        raise ValueError(f"flashtile: `block_table` has {block_table.shape[1]} pages of "
                         f"{page} keys, too few for a sequence of {max(lengths)} keys")
    index = torch.cat([
        block_table[b, pos // page].long() * page + pos % page
        for b, n in enumerate(lengths)
        for pos in [torch.arange(n, device=block_table.device)]
    ])
    flat = (-1,) + tuple(k_cache.shape[2:])
    return k_cache.reshape(flat)[index], v_cache.reshape(flat)[index]
