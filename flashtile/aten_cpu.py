"""ATen's CPU flash-attention kernel, for the plain cases of the PyTorch path.

torch ships a tiled, multithreaded exact attention for CPU tensors (the kernel
behind SDPA's CPU flash backend). It returns the LSE, and its backward takes O
and the LSE as ours does, so it can serve the PyTorch path's forward and
backward directly. It covers no dropout (its RNG is not ours, and the chunked
path replays masks), windows, softcap, ALiBi or returned probabilities; those
calls stay on the chunked path. On the CPU machine it is 5-13x faster than
the chunked path (benchmarks/NOTES.md, session 18).

Two conventions differ from flash_attn's and are bridged here:

* GQA: the kernel wants one K/V head per query head, so K and V are repeated
  per group, and their gradients summed back.
* causal: the kernel aligns the mask to the top-left corner, flash_attn to the
  bottom-right. With Sq > Sk the first Sq - Sk rows see no key (out 0, LSE
  -inf) and the other rows are a square causal problem. With Sq < Sk every row
  sees the first Sk - Sq keys: a non-causal part and a square causal part,
  merged by their LSEs (forward), each differentiated against the merged O and
  LSE (backward: P and rowsum(dO * O) are those of the whole row).

Shapes: q (B, Sq, H, D), k / v (B, Sk, Hk, D) as in flashtile; the kernel's
(B, H, S, D) are transposed views.
"""

from __future__ import annotations

import torch

from flashtile.merge import merge_attention_states

# Tests switch this off to run the chunked path on the cases this module covers.
ENABLED = True

_KERNEL = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_KERNEL_BACKWARD = getattr(torch.ops.aten,
                           "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def covers(q: torch.Tensor, k: torch.Tensor, opts: dict, return_probs: bool) -> bool:
    """Whether this call's options are ones the ATen kernel computes as flashtile does."""
    return (ENABLED and _KERNEL is not None and _KERNEL_BACKWARD is not None
            and q.device.type == "cpu" and k.shape[1] > 0 and not return_probs
            and opts["dropout_p"] == 0 and opts["softcap"] == 0
            and opts["alibi_slopes"] is None and opts["window_left"] < 0
            and opts["window_right"] in (-1, 0))


def _heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, S, Hk, D) -> (B, Hk * groups, S, D), each KV head repeated for its group."""
    x = x.transpose(1, 2)
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _parts(seqlen_q: int, seqlen_k: int, causal: bool):
    """(rows, keys, causal) pieces the bottom-right-aligned mask splits into."""
    if not causal:
        return [(slice(0, seqlen_q), slice(0, seqlen_k), False)]
    if seqlen_q >= seqlen_k:  # the top seqlen_q - seqlen_k rows see nothing
        return [(slice(seqlen_q - seqlen_k, seqlen_q), slice(0, seqlen_k), True)]
    shared = seqlen_k - seqlen_q  # keys every row sees
    return [(slice(0, seqlen_q), slice(0, shared), False),
            (slice(0, seqlen_q), slice(shared, seqlen_k), True)]


def forward(q, k, v, opts):
    """out (B, Sq, H, D) in q's dtype and lse (B, H, Sq) float32."""
    out, lse = _forward(q, k, v, opts)
    # The kernel reads a row whose query holds a NaN as fully masked (out 0, LSE 0);
    # the math, and every other flashtile path, give NaN there.
    nan_rows = torch.isnan(q).any(-1)  # (B, Sq, H)
    if nan_rows.any():
        out = out.masked_fill(nan_rows.unsqueeze(-1), float("nan"))
        lse = lse.masked_fill(nan_rows.transpose(1, 2), float("nan"))
    return out, lse


def _forward(q, k, v, opts):
    B, Sq, H, D = q.shape
    Sk, groups = k.shape[1], H // k.shape[2]
    qh, kh, vh = q.transpose(1, 2), _heads(k, groups), _heads(v, groups)
    scale, causal = opts["softmax_scale"], opts["window_right"] == 0
    parts = _parts(Sq, Sk, causal)
    outs, lses = [], []
    for rows, keys, part_causal in parts:
        out, lse = _KERNEL(qh[:, :, rows], kh[:, :, keys], vh[:, :, keys], 0.0, part_causal,
                           scale=scale)
        outs.append(out.transpose(1, 2))
        lses.append(lse.float())
    if len(outs) == 2:
        return merge_attention_states(outs, lses, out_dtype=q.dtype)
    rows = parts[0][0]
    if rows.start == 0:
        return outs[0], lses[0]
    out = q.new_zeros(B, Sq, H, v.shape[-1])
    lse = torch.full((B, H, Sq), float("-inf"), device=q.device)
    out[:, rows], lse[:, :, rows] = outs[0], lses[0]
    return out, lse


def backward(dout, q, k, v, out, lse, opts):
    """dq, dk, dv in the dtypes of q, k, v."""
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    groups = H // Hk
    qh, kh, vh = q.transpose(1, 2), _heads(k, groups), _heads(v, groups)
    doh, oh = dout.to(q.dtype).transpose(1, 2), out.to(q.dtype).transpose(1, 2)
    lse = lse.float()
    scale, causal = opts["softmax_scale"], opts["window_right"] == 0
    # float32 sums: a causal Sq < Sk call adds two parts' dq, GQA sums a group's dk / dv
    dq, dk, dv = (torch.zeros(x.shape, device=x.device) for x in (qh, kh, vh))
    for rows, keys, part_causal in _parts(Sq, Sk, causal):
        g = _KERNEL_BACKWARD(doh[:, :, rows], qh[:, :, rows], kh[:, :, keys], vh[:, :, keys],
                             oh[:, :, rows], lse[:, :, rows].contiguous(), 0.0, part_causal,
                             scale=scale)
        dq[:, :, rows] += g[0]
        dk[:, :, keys] += g[1]
        dv[:, :, keys] += g[2]
    return (dq.transpose(1, 2).to(q.dtype), _sum_groups(dk, Hk).to(k.dtype),
            _sum_groups(dv, Hk).to(v.dtype))


def _sum_groups(x: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """(B, H, S, D) gradients of the repeated heads -> (B, S, Hk, D)."""
    B, H, S, D = x.shape
    if H != n_kv_heads:
        x = x.view(B, n_kv_heads, H // n_kv_heads, S, D).sum(2)
    return x.transpose(1, 2)
