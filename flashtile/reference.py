"""Plain PyTorch attention that every kernel in flashtile is checked against.

`attention_ref` materialises the full score matrix on purpose: it is the
readable definition of what the fast paths must compute, not a fast path.
With ``upcast=True`` (the default) it works in float64; with ``upcast=False``
it runs in the inputs' own dtype, which gives the "plain PyTorch in the same
low precision" baseline of FlashAttention's error rule.

Layout follows flash_attn: q (B, Sq, H, D), k and v (B, Sk, Hk, D), H % Hk == 0.
"""

from __future__ import annotations

import math

import torch

_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def local_mask(
    seqlen_q: int,
    seqlen_k: int,
    window_size: tuple[int, int],
    *,
    query_lengths: torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    key_leftpad: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """Boolean mask, True where query i may NOT see key j.

    Windows are aligned to the bottom-right corner: with per-item lengths sq
    and sk, query i sees key j when
    ``i + sk - sq - left <= j <= i + sk - sq + right`` (-1 = unbounded side).
    Returns shape (B or 1, 1, Sq, Sk) so it broadcasts over heads.
    """
    left, right = window_size
    row = torch.arange(seqlen_q, device=device).view(-1, 1)  # (Sq, 1)
    col = torch.arange(seqlen_k, device=device).view(1, -1)  # (1, Sk)
    if key_leftpad is not None:
        col = col - key_leftpad.view(-1, 1, 1, 1)
    sq = seqlen_q if query_lengths is None else query_lengths.view(-1, 1, 1, 1)
    sk = seqlen_k if key_lengths is None else key_lengths.view(-1, 1, 1, 1)
    diag = row + sk - sq  # key index on the bottom-right-aligned diagonal
    masked = torch.zeros(1, 1, seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if right >= 0:
        masked = masked | (col > diag + right)
    else:
        masked = masked | (col >= sk)
    if left >= 0:
        masked = masked | (col < diag - left)
    return masked


def alibi_bias(
    alibi_slopes: torch.Tensor,
    seqlen_q: int,
    seqlen_k: int,
    *,
    query_lengths: torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    key_leftpad: torch.Tensor | None = None,
) -> torch.Tensor:
    """ALiBi bias -slope * |i + sk - sq - j|, shape (B or 1, H, Sq, Sk), float64."""
    device = alibi_slopes.device
    slopes = alibi_slopes.double()
    slopes = slopes.view(-1, slopes.shape[-1], 1, 1)  # (B or 1, H, 1, 1)
    row = torch.arange(seqlen_q, device=device).view(-1, 1)
    col = torch.arange(seqlen_k, device=device).view(1, -1)
    if key_leftpad is not None:
        col = col - key_leftpad.view(-1, 1, 1, 1)
    sq = seqlen_q if query_lengths is None else query_lengths.view(-1, 1, 1, 1)
    sk = seqlen_k if key_lengths is None else key_lengths.view(-1, 1, 1, 1)
    return -slopes * (row + sk - sq - col).abs().double()


def masked_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    query_padding_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    key_leftpad: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores (B, H, Sq, Sk) after scale, softcap, ALiBi and masks (-inf = masked).

    Works in the dtype of q and k; GQA is handled by repeating K (fine here).
    """
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    if causal:
        window_size = (window_size[0], 0)
    k = k.repeat_interleave(H // Hk, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q * scale, k)  # (B, H, Sq, Sk)
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    q_len = query_padding_mask.sum(-1) if query_padding_mask is not None else None
    k_len = key_padding_mask.sum(-1) if key_padding_mask is not None else None
    masked = local_mask(
        Sq, Sk, window_size, query_lengths=q_len, key_lengths=k_len,
        key_leftpad=key_leftpad, device=q.device,
    )
    if key_padding_mask is not None:
        masked = masked | ~key_padding_mask.view(B, 1, 1, Sk)
    if alibi_slopes is not None:
        bias = alibi_bias(alibi_slopes, Sq, Sk, query_lengths=q_len, key_lengths=k_len,
                          key_leftpad=key_leftpad)
        scores = scores + bias.to(scores.dtype)
    return scores.masked_fill(masked, float("-inf"))


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    query_padding_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    key_leftpad: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    dropout_mask: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    upcast: bool = True,
    q_descale: torch.Tensor | None = None,
    k_descale: torch.Tensor | None = None,
    v_descale: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with every flashtile option, computed the obvious way.

    Args:
        q, k, v: (B, Sq, H, D), (B, Sk, Hk, D), (B, Sk, Hk, D).
        query_padding_mask, key_padding_mask: (B, Sq) / (B, Sk) bool, True = real
            token. Valid tokens come first (right padding), except that
            ``key_leftpad`` (B,) shifts the first valid key of each item.
        dropout_mask: (B, H, Sq, Sk) bool keep-mask (True = kept); the kept
            probabilities are scaled by 1 / (1 - dropout_p).
        causal, window_size, softcap, alibi_slopes: as in ``flash_attn_func``.
        upcast: compute in float64 (True) or in the inputs' dtype (False).
            float8_e4m3fn inputs need upcast=True.
        q_descale, k_descale, v_descale: None or (B, Hk) factors multiplying the
            (upcast) inputs first, q's by the KV head of its group: FP8 inputs
            are dequantised this way, exactly, in float64.
        attn_mask: None or a bool tensor broadcastable to (B, H, Sq, Sk), True =
            may attend, applied on top of every other mask.

    Returns:
        out (B, Sq, H, D) (float64 when upcast, else q's dtype) and the
        natural-log LSE (B, H, Sq); fully masked rows give out 0 and LSE -inf.
    """
    if q.dtype in _FP8_DTYPES and not upcast:
        raise ValueError("attention_ref: float8 inputs need upcast=True")
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    q, k, v = dequantize(q, k, v, q_descale, k_descale, v_descale)
    B, Sq, H, D = q.shape
    scores = masked_scores(
        q, k, query_padding_mask=query_padding_mask, key_padding_mask=key_padding_mask,
        key_leftpad=key_leftpad, softmax_scale=softmax_scale, causal=causal,
        window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
    )
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Sq), -inf on fully masked rows
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # NaN rows -> 0
    if dropout_mask is not None:
        probs = probs.masked_fill(~dropout_mask, 0.0) / (1.0 - dropout_p)
    v = v.repeat_interleave(H // v.shape[2], dim=2)
    out = torch.einsum("bhij,bjhd->bihd", probs, v)
    if query_padding_mask is not None:
        out = out.masked_fill(~query_padding_mask.view(B, Sq, 1, 1), 0.0)
    return out, lse


def dequantize(q, k, v, q_descale=None, k_descale=None, v_descale=None):
    """q (B, Sq, H, D), k/v (B, Sk, Hk, D) times their (B, Hk) descales (None = 1),
    in the dtype of q (float64 descales are applied exactly to fp8 values)."""
    Hk = k.shape[2]
    group = q.shape[2] // Hk
    if q_descale is not None:
        q = q * q_descale.to(q.dtype).repeat_interleave(group, dim=1)[:, None, :, None]
    if k_descale is not None:
        k = k * k_descale.to(k.dtype)[:, None, :, None]
    if v_descale is not None:
        v = v * v_descale.to(v.dtype)[:, None, :, None]
    return q, k, v


def attention_probs_ref(q: torch.Tensor, k: torch.Tensor, **options) -> torch.Tensor:
    """Softmax probabilities (B, H, Sq, Sk) in float64, before dropout.

    Takes the masking options of `masked_scores`; masked entries are 0.
    """
    scores = masked_scores(q.double(), k.double(), **options)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def transposed_v_ref(v: torch.Tensor, permute_keys: bool) -> torch.Tensor:
    """What `kernels.layout.transposed_v` stores, in torch views: v (B, S, Hk, D) or
    (total, Hk, D) -> (B, Hk, D, S) or (Hk, D, total); permute_keys: S zero-padded to a
    multiple of 16, position (g, b2, b1, b3, b0) holding key (g, b3, b2, b1, b0)."""
    if not permute_keys:
        return v.permute(*((0, 2, 3, 1) if v.dim() == 4 else (1, 2, 0))).contiguous()
    batch, seqlen, kv_heads, head_dim = v.shape
    padded = -(-seqlen // 16) * 16
    v_pad = torch.zeros((batch, padded, kv_heads, head_dim), dtype=v.dtype, device=v.device)
    v_pad[:, :seqlen] = v
    src = v_pad.view(batch, padded // 16, 2, 2, 2, 2, kv_heads, head_dim)
    return src.permute(0, 6, 7, 1, 3, 4, 2, 5).reshape(batch, kv_heads, head_dim, padded)
