"""FP8 (e4m3) quantisation for flashtile's FP8 forward pass.

`quantize_fp8` turns q, k, v into float8_e4m3fn tensors plus the descale
factors that `flash_attn_func(..., q_descale=, k_descale=, v_descale=)` takes,
in FlashAttention-3's convention: one float32 factor per (batch, KV head),
shape (B, Hk). Each group of values is scaled so that its largest magnitude
lands on e4m3's largest finite value (448); the descale is the inverse scale.
q's factor covers all the query heads that share a KV head, which is what the
(B, Hk) convention needs.

Incoherent processing (FlashAttention-3, after QuIP): q and k are first
multiplied by one random orthogonal matrix ``M = H_D · diag(s) / sqrt(D)``
(H_D the Walsh-Hadamard matrix, s random signs from `seed`), applied to each
row vector x as ``x -> M x``. Since ``(M q) · (M k) = q · k`` the attention is
unchanged in exact arithmetic, but a few large channels ("outliers") are
spread over all D channels, which shrinks the amax that sets the scale and
evens out the rounding error across channels. v is left alone (the output
would need the inverse transform).
"""

from __future__ import annotations

import torch

from flashtile.validation import check_cu_seqlens, check_tensor

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _random_signs(d: int, seed: int, device, dtype) -> torch.Tensor:
    """d random +-1 from `seed`, drawn on the CPU so every device gets the same ones."""
    gen = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (d,), generator=gen) * 2 - 1
    return signs.to(device=device, dtype=dtype)


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """x @ H_D over the last dim (unnormalised Sylvester Walsh-Hadamard, D a power of 2).

    H_D is symmetric, so this is also H_D x for column vectors. log2(D) butterfly
    stages, each one add and one subtract per pair, out of place.
    """
    shape = x.shape
    d = shape[-1]
    h = 1
    while h < d:
        pairs = x.reshape(*shape[:-1], d // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return x.reshape(shape)


def _check_head_dim(d: int) -> None:
    if d < 1 or d & (d - 1):
        raise ValueError(f"flashtile: incoherent processing needs head_dim (the last dim) "
                         f"to be a power of two, got head_dim={d}")


def hadamard_transform(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``M x`` for every vector x along the last dim, M = H_D · diag(s) / sqrt(D).

    s are D random signs from `seed`, so M is a random orthogonal matrix and the
    same seed gives the same M on every device: transforming q and k with one
    seed leaves every q · k unchanged (up to rounding). D (the head dim) must be
    a power of two. Computed in float32 (float64 for float64 inputs); returns
    that dtype, not x's, so a bf16/fp16 input is not rounded again.
    """
    check_tensor("x", x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"flashtile: `x` must be a float16, bfloat16, float32 or float64 "
                        f"tensor, got {x.dtype}")
    d = x.shape[-1] if x.dim() else 0
    _check_head_dim(d)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(work) * _random_signs(d, seed, x.device, work)
    return _fwht(x) * (d ** -0.5)


def _group_scales(x: torch.Tensor, kv_heads: int, segments, batch: int) -> torch.Tensor:
    """float32 (B, Hk) scale mapping each (item, KV-head group) amax to FP8_MAX.

    x: dense (B, S, H, D) or, with `segments` (the item of every row), varlen (T, H, D).
    An all-zero group gets scale 1.
    """
    amax = x.abs().amax(-1)  # (B, S, H) or (T, H)
    amax = amax.unflatten(-1, (kv_heads, -1)).amax(-1).float()  # (B, S, Hk) or (T, Hk)
    if segments is None:
        amax = amax.amax(1) if amax.shape[1] else amax.new_zeros(batch, kv_heads)
    else:
        index = segments[:, None].expand(-1, kv_heads)
        amax = amax.new_zeros(batch, kv_heads).scatter_reduce(0, index, amax, "amax")
    # 1e-30 keeps FP8_MAX / amax finite in float32 for denormal-sized groups.
    return torch.where(amax > 0, FP8_MAX / amax.clamp(min=1e-30), torch.ones_like(amax))


def _apply_scale(x: torch.Tensor, scale: torch.Tensor, kv_heads: int, segments) -> torch.Tensor:
    """x * scale (broadcast over the heads of each KV group), saturated, cast to e4m3."""
    s = scale[:, None] if segments is None else scale[segments]  # (B, 1, Hk) or (T, Hk)
    grouped = x.unflatten(-2, (kv_heads, -1)) * s[..., None, None]
    return grouped.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).flatten(-3, -2)


def _segments(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """int64 (total,) item index of every row of a varlen batch."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    items = torch.arange(lengths.shape[0], device=cu_seqlens.device)
    return torch.repeat_interleave(items, lengths, output_size=total)


def quantize_fp8(q, k, v, *, cu_seqlens_q=None, cu_seqlens_k=None, incoherent=False, seed=0):
    """Quantise q, k, v to float8_e4m3fn with per-(batch, KV head) scales.

    Args:
        q: (B, Sq, H, D), k and v (B, Sk, Hk, D), float16, bfloat16, float32 or
            float64; or varlen q (total_q, H, D), k/v (total_k, Hk, D) with
            `cu_seqlens_q` (and `cu_seqlens_k`, default `cu_seqlens_q`), int32
            (B + 1,) as in `flash_attn_varlen_func`.
        incoherent: first transform q and k with `hadamard_transform` (same seed
            for both, so q · k is unchanged); needs D a power of two.
        seed: the random signs of the transform.

    Returns:
        (q8, k8, v8, q_descale, k_descale, v_descale): float8_e4m3fn tensors
        shaped like the inputs and float32 (B, Hk) descales, ready for
        ``flash_attn_func(q8, k8, v8, q_descale=..., k_descale=..., v_descale=...)``.
        ``q8[..., h, :] * q_descale[b, h // (H // Hk)]`` approximates q (or its
        transform) to e4m3's precision (3 mantissa bits: relative error <= 2^-4,
        absolute <= 2^-10 * descale near zero).
    """
    varlen = cu_seqlens_q is not None
    if cu_seqlens_k is not None and not varlen:
        raise ValueError("flashtile: `cu_seqlens_k` needs `cu_seqlens_q` (varlen inputs)")
    ndim = 3 if varlen else 4
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, ndim=ndim)
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"flashtile: `{name}` must be a float16, bfloat16, float32 or "
                            f"float64 tensor to quantise, got {x.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"flashtile: `v` must have the shape of k {tuple(k.shape)}, "
                         f"got {tuple(v.shape)}")
    if q.shape[-1] == 0:
        raise ValueError(f"flashtile: `q` must have head dim >= 1, got {tuple(q.shape)}")
    if q.shape[-1] != k.shape[-1] or (not varlen and q.shape[0] != k.shape[0]):
        raise ValueError(f"flashtile: q {tuple(q.shape)} and k {tuple(k.shape)} must share "
                         f"the head dim{'' if varlen else ' and the batch size'}")
    heads, kv_heads = q.shape[-2], k.shape[-2]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"flashtile: the number of query heads ({heads}) must be divisible "
                         f"by the number of key/value heads ({kv_heads})")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flashtile: q, k and v must be on one device, got {q.device}, "
                         f"{k.device}, {v.device}")
    seg_q = seg_k = None
    batch = q.shape[0]
    if varlen:
        cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
        batch = cu_seqlens_q.numel() - 1
        for name, cu, total in (("cu_seqlens_q", cu_seqlens_q, q.shape[0]),
                                ("cu_seqlens_k", cu_seqlens_k, k.shape[0])):
            check_cu_seqlens(name, cu, total, total, "max_seqlen", q.device)
        if cu_seqlens_k.numel() != cu_seqlens_q.numel():
            raise ValueError(f"flashtile: `cu_seqlens_k` must have the length of "
                             f"`cu_seqlens_q` ({cu_seqlens_q.numel()}), got "
                             f"{cu_seqlens_k.numel()}")
        seg_q, seg_k = _segments(cu_seqlens_q, q.shape[0]), _segments(cu_seqlens_k, k.shape[0])
    if incoherent:
        _check_head_dim(q.shape[-1])
        q, k = hadamard_transform(q, seed), hadamard_transform(k, seed)
    outputs, descales = [], []
    for x, seg in ((q, seg_q), (k, seg_k), (v, seg_k)):
        x = x if x.dtype == torch.float64 else x.float()
        scale = _group_scales(x, kv_heads, seg, batch)
        outputs.append(_apply_scale(x, scale, kv_heads, seg))
        descales.append(1.0 / scale)
    return (*outputs, *descales)


__all__ = ["FP8_DTYPE", "FP8_MAX", "hadamard_transform", "quantize_fp8"]
