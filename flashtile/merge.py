"""Merging partial attention results by their log-sum-exp.

If keys are split into disjoint parts and attention is computed over each part
alone, giving (out_i, lse_i), the attention over all keys is

    lse = log(sum_i exp(lse_i))
    out = sum_i exp(lse_i - lse) * out_i

This is how the split-KV decoding kernel combines its splits (it computes the
same function in `flashtile.kernels.decode._merge_kernel`), and how ring /
context-parallel attention combines the blocks of keys held by other ranks.

Layout (flash_attn's): out (..., S, H, D) and lse (..., H, S), e.g. out
(B, Sq, H, D) with lse (B, H, Sq) as returned by ``flash_attn_func(...,
return_attn_probs=True)`` and ``flash_attn_with_kvcache(..., return_softmax_lse=True)``,
or varlen out (total, H, D) with lse (H, total).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def merge_attention_states(outs, lses, out_b=None, lse_b=None, *, out_dtype=None):
    """Combine partial attention outputs computed over disjoint key sets.

    Two forms::

        out, lse = merge_attention_states(out_a, lse_a, out_b, lse_b)
        out, lse = merge_attention_states([out_0, out_1, ...], [lse_0, lse_1, ...])
        out, lse = merge_attention_states(outs, lses)   # stacked (N, ..., S, H, D), (N, ..., H, S)

    Args:
        outs: one partial output (..., S, H, D) (two-way form), or N of them as a
            sequence or a tensor stacked on a new leading dim.
        lses: the matching natural-log LSE (..., H, S) (or N of them), any float dtype.
        out_b, lse_b: the second part, for the two-way form.
        out_dtype: dtype of the merged output (default: that of the partial outputs).

    Returns:
        out (..., S, H, D) and lse (..., H, S) float32 (float64 when an input is).

    Parts whose LSE is -inf for a row (they saw no key there) contribute nothing
    to that row, even if their output holds NaN or garbage; a row with -inf in
    every part gets out 0 and lse -inf. Computed in float32 (or float64 if given
    float64), without NaN for any pattern of -inf.
    """
    if out_b is not None or lse_b is not None:
        if out_b is None or lse_b is None:
            raise ValueError("flashtile: pass both `out_b` and `lse_b` (or neither)")
        outs, lses = [outs, out_b], [lses, lse_b]
    if isinstance(outs, torch.Tensor) and not isinstance(lses, torch.Tensor):
        raise TypeError("flashtile: `outs` and `lses` must both be stacked tensors or "
                        "both sequences")
    if not isinstance(outs, torch.Tensor):
        if not isinstance(outs, Sequence) or not isinstance(lses, Sequence) or not outs:
            raise TypeError("flashtile: `outs`/`lses` must be non-empty sequences of tensors "
                            "or stacked tensors")
        if len(outs) != len(lses):
            raise ValueError(f"flashtile: {len(outs)} outputs but {len(lses)} LSEs")
        outs, lses = torch.stack(list(outs)), torch.stack(list(lses))
    if outs.dim() < 3 or lses.dim() != outs.dim() - 1:
        raise ValueError(f"flashtile: expected outs (N, ..., S, H, D) and lses (N, ..., H, S), "
                         f"got {tuple(outs.shape)} and {tuple(lses.shape)}")
    if lses.shape != outs.shape[:-3] + (outs.shape[-2], outs.shape[-3]):
        raise ValueError(f"flashtile: lses {tuple(lses.shape)} do not match outs "
                         f"{tuple(outs.shape)} (want (N, ..., H, S) for (N, ..., S, H, D))")
    out_dtype = out_dtype or outs.dtype
    work = torch.float64 if torch.float64 in (outs.dtype, lses.dtype) else torch.float32
    lse = lses.to(work)
    top = lse.amax(dim=0)  # (..., H, S)
    top = torch.where(torch.isneginf(top), torch.zeros_like(top), top)  # all -inf: any finite
    weights = torch.exp(lse - top)  # -inf parts -> 0
    total = weights.sum(dim=0)
    merged_lse = top + torch.log(total)  # total 0 -> -inf
    weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    weights = weights.transpose(-1, -2).unsqueeze(-1)  # (N, ..., S, H, 1)
    parts = torch.where(weights > 0, weights * outs.to(work), torch.zeros((), dtype=work,
                                                                          device=outs.device))
    return parts.sum(dim=0).to(out_dtype), merged_lse
