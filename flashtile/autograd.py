"""The autograd layer: attention forward and backward as torch.library custom ops.

Registering the two passes as custom ops (with fake implementations for shape
propagation) lets ``torch.compile(fullgraph=True)`` trace through flashtile, and
`torch.library.register_autograd` ties them together. The ops dispatch at run
time to the Triton kernels or the PyTorch path (`flashtile.backend`); both share
one contract, documented in `flashtile.kernels`.

Inputs arrive validated by `flashtile.interface`; causal is already folded into
``window_right = 0``. FP8 (float8_e4m3fn) inputs come with their three descale
tensors (float32 (B, Hk), ones where the caller gave none) and are forward-only:
the interface refuses them when a gradient is wanted, so the backward op never
sees them. Non-fp8 inputs come with no descales.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from flashtile import backend
from flashtile.validation import FP8_DTYPES, FP8_OUT_DTYPE


def _lse_shape(q: Tensor, varlen: bool) -> tuple[int, ...]:
    # Dense: (B, H, Sq); varlen: (H, total_q), as flash_attn returns them.
    return (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])


@torch.library.custom_op("flashtile::attention_forward", mutates_args=())
def attention_forward(
    q: Tensor, k: Tensor, v: Tensor,
    cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
    max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: float, window_left: int, window_right: int, softcap: float,
    alibi_slopes: Optional[Tensor], dropout_p: float, seed: Optional[Tensor],
    return_probs: bool, fp32_precision: str, deterministic: bool,
    q_descale: Optional[Tensor] = None, k_descale: Optional[Tensor] = None,
    v_descale: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (out, lse, probs); probs is an empty tensor unless return_probs.

    `deterministic` only travels to the backward pass. The descales (FP8 inputs
    only) are float32 (B, Hk); the output of fp8 inputs is bfloat16.
    """
    return _forward_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                         softmax_scale, window_left, window_right, softcap, alibi_slopes,
                         dropout_p, seed, return_probs, fp32_precision, deterministic,
                         q_descale, k_descale, v_descale)


def _descales(q, q_descale, k_descale, v_descale):
    """The backend's `descales`: None for non-fp8 inputs, else the three (B, Hk) float32
    tensors (ones in place of a missing one; the interface already fills them in)."""
    given = (q_descale, k_descale, v_descale)
    if q.dtype not in FP8_DTYPES:
        return None
    ref = next((x for x in given if x is not None), None)
    if ref is None:
        return None  # the backend reads None as all ones
    return tuple((torch.ones_like(ref) if x is None else x).contiguous() for x in given)


def _forward_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                  softmax_scale, window_left, window_right, softcap, alibi_slopes, dropout_p,
                  seed, return_probs, fp32_precision, deterministic=False, q_descale=None,
                  k_descale=None, v_descale=None):
    descales = _descales(q, q_descale, k_descale, v_descale)
    # `descales` is handed over only for fp8 inputs, so the other calls stay the same.
    fp8 = {} if descales is None else {"descales": descales}
    out, lse, probs = backend.implementation(q.device).attention_forward(
        q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale,
        window_left=window_left, window_right=window_right, softcap=softcap,
        alibi_slopes=alibi_slopes, dropout_p=dropout_p, seed=seed,
        return_probs=return_probs, fp32_precision=fp32_precision, **fp8,
    )
    if probs is None:
        probs = q.new_empty(0, dtype=torch.float32)
    # Contiguous outputs whatever the path, so the fake implementations below hold.
    return out.contiguous(), lse.contiguous(), probs


@attention_forward.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
      window_left, window_right, softcap, alibi_slopes, dropout_p, seed, return_probs,
      fp32_precision, deterministic, q_descale=None, k_descale=None, v_descale=None):
    varlen = cu_seqlens_q is not None
    lse = q.new_empty(_lse_shape(q, varlen), dtype=torch.float32)
    if return_probs:
        batch = cu_seqlens_q.shape[0] - 1 if varlen else q.shape[0]
        heads = q.shape[-2]
        probs = q.new_empty((batch, heads, max_seqlen_q, max_seqlen_k), dtype=torch.float32)
    else:
        probs = q.new_empty(0, dtype=torch.float32)
    out_dtype = FP8_OUT_DTYPE if q.dtype in FP8_DTYPES else q.dtype
    return torch.empty(q.shape, dtype=out_dtype, device=q.device), lse, probs


@torch.library.custom_op("flashtile::attention_backward", mutates_args=())
def attention_backward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
    max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: float, window_left: int, window_right: int, softcap: float,
    alibi_slopes: Optional[Tensor], dropout_p: float, seed: Optional[Tensor],
    deterministic: bool, fp32_precision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) from the saved inputs, output and LSE.

    `out` and `lse` may come from elsewhere (split-KV, ring attention): the
    backward only needs them to be the attention output and its row LSE.
    """
    return _backward_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                          max_seqlen_k, softmax_scale, window_left, window_right, softcap,
                          alibi_slopes, dropout_p, seed, deterministic, fp32_precision)


def _backward_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, softmax_scale, window_left, window_right, softcap,
                   alibi_slopes, dropout_p, seed, deterministic, fp32_precision):
    dq, dk, dv = backend.implementation(q.device).attention_backward(
        dout, q, k, v, out, lse, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale,
        window_left=window_left, window_right=window_right, softcap=softcap,
        alibi_slopes=alibi_slopes, dropout_p=dropout_p, seed=seed,
        deterministic=deterministic, fp32_precision=fp32_precision,
    )
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@attention_backward.register_fake
def _(dout, q, k, v, *args):
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))


# Positions of the forward op's arguments, for the autograd glue below.
_FORWARD_ARGS = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q",
                 "max_seqlen_k", "softmax_scale", "window_left", "window_right", "softcap",
                 "alibi_slopes", "dropout_p", "seed", "return_probs", "fp32_precision",
                 "deterministic", "q_descale", "k_descale", "v_descale")
_SAVED_TENSORS = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "alibi_slopes", "seed")
# Not needed by the backward: FP8 (the only inputs with descales) has none.
_UNSAVED = ("return_probs", "q_descale", "k_descale", "v_descale")


# Positions in the argument list, computed once (this runs on every recorded call).
_SAVED_AT = tuple(_FORWARD_ARGS.index(name) for name in _SAVED_TENSORS)
_OPTIONS_AT = tuple((name, i) for i, name in enumerate(_FORWARD_ARGS)
                    if name not in _SAVED_TENSORS and name not in _UNSAVED)


def _setup_context(ctx, inputs, output):
    out, lse, _ = output
    ctx.save_for_backward(*(inputs[i] for i in _SAVED_AT), out, lse)
    ctx.options = {name: inputs[i] for name, i in _OPTIONS_AT}
    ctx.num_inputs = len(inputs)


def _backward_through(backward_fn, ctx, dout):
    """Gradients for every forward argument, computed by `backward_fn` (the op or the
    implementation it wraps) from what `_setup_context` saved."""
    q, k, v, cu_q, cu_k, alibi, seed, out, lse = ctx.saved_tensors
    o = ctx.options
    dq, dk, dv = backward_fn(
        dout.contiguous(), q, k, v, out, lse, cu_q, cu_k, o["max_seqlen_q"],
        o["max_seqlen_k"], o["softmax_scale"], o["window_left"], o["window_right"],
        o["softcap"], alibi, o["dropout_p"], seed, o["deterministic"], o["fp32_precision"])
    return (dq, dk, dv) + (None,) * (ctx.num_inputs - 3)


attention_forward.register_autograd(
    lambda ctx, dout, _dlse, _dprobs: _backward_through(attention_backward, ctx, dout),
    setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The same forward, saved state and backward as the custom ops, without the
    custom-op dispatch: with autograd recording that dispatch costs ~130 us per
    call on this project's CPU machines (~80 us on the H200 host), against ~5 us
    for an autograd.Function, which matters for short sequences."""

    @staticmethod
    def forward(ctx, q, k, v, rest):
        # `rest`: the other 17 arguments in one tuple (none needs a gradient), so that
        # apply's per-argument bookkeeping walks 4 arguments instead of 20
        inputs = (q, k, v, *rest)
        output = _forward_impl(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1], output[2])
        return output

    @staticmethod
    def backward(ctx, dout, _dlse, _dprobs):
        return _backward_through(_backward_impl, ctx, dout)[:3] + (None,)


def attention(*inputs) -> tuple[Tensor, Tensor, Tensor]:
    """(out, lse, probs) with autograd, arguments as `attention_forward`.

    While torch.compile traces, the registered custom op (so the graph holds one
    opaque node with a fake implementation); in eager mode the lighter
    `_EagerAttention`, or the bare implementation when no gradient can flow. All run
    the same implementation.
    """
    if torch.compiler.is_compiling():
        return attention_forward(*inputs)
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs[:3])):
        return _forward_impl(*inputs)  # inference: no autograd node to build (~15 us)
    return _EagerAttention.apply(*inputs[:3], inputs[3:])
