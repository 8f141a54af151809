"""Input checks for the public API: every bad input fails loudly, naming the argument.

Wrong types raise TypeError, wrong values or shapes ValueError, and valid but
unsupported combinations NotImplementedError. Checks that need the values of a
device tensor (cu_seqlens) synchronise with the GPU once; they are skipped
while torch.compile traces or a CUDA graph is being captured.
"""

from __future__ import annotations

import math

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# FP8 inputs (forward only, FlashAttention-3's convention): e4m3 with per-(batch,
# KV head) descale factors; the output is bfloat16.
FP8_DTYPES = (torch.float8_e4m3fn,)
FP8_OUT_DTYPE = torch.bfloat16
MAX_HEAD_DIM = 256


def _fail(cls, name: str, expected: str, got) -> None:
    raise cls(f"flashtile: `{name}` must be {expected}, got {got}")


def check_tensor(name: str, x, ndim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        _fail(TypeError, name, "a torch.Tensor", type(x).__name__)
    if ndim is not None and x.dim() != ndim:
        _fail(ValueError, name, f"a {ndim}-D tensor", f"shape {tuple(x.shape)}")


def contiguous_last_dim(x: torch.Tensor) -> torch.Tensor:
    """flash_attn's rule: only the last dimension must be contiguous."""
    return x if x.stride(-1) == 1 else x.contiguous()


def is_fp8(x: torch.Tensor) -> bool:
    return x.dtype in FP8_DTYPES


def check_qkv(q, k, v, *, varlen: bool, allow_fp8: bool = False) -> None:
    """Ranks, dtypes, devices and shapes of q, k, v.

    Dense: q (B, Sq, H, D), k/v (B, Sk, Hk, D). Varlen: the same without B.
    `allow_fp8`: the entry point also takes float8_e4m3fn q, k, v (all three).
    """
    ndim = 3 if varlen else 4
    layout = "(total, heads, head_dim)" if varlen else "(batch, seqlen, heads, head_dim)"
    dtypes = SUPPORTED_DTYPES + (FP8_DTYPES if allow_fp8 else ())
    expected = "float16, bfloat16 or float32" + (
        " (or float8_e4m3fn, forward only)" if allow_fp8 else "")
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x)
        if x.dim() != ndim:
            _fail(ValueError, name, f"a {ndim}-D tensor {layout}", f"shape {tuple(x.shape)}")
        if x.dtype not in dtypes:
            _fail(TypeError, name, expected, x.dtype)
    if any(is_fp8(x) for x in (q, k, v)) and not all(is_fp8(x) for x in (q, k, v)):
        raise TypeError(f"flashtile: q, k and v must all be float8_e4m3fn if one is, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flashtile: q, k and v must share one dtype, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flashtile: q, k and v must be on one device, got {q.device}, "
                         f"{k.device}, {v.device}")
    if k.shape != v.shape:
        _fail(ValueError, "v", f"the same shape as k {tuple(k.shape)}", tuple(v.shape))
    if not varlen and q.shape[0] != k.shape[0]:
        _fail(ValueError, "k", f"batch size {q.shape[0]} like q", k.shape[0])
    if q.shape[-1] != k.shape[-1]:
        _fail(ValueError, "k", f"head dim {q.shape[-1]} like q", k.shape[-1])
    if q.shape[-1] > MAX_HEAD_DIM:
        raise NotImplementedError(
            f"flashtile: head dim {q.shape[-1]} is not supported (at most {MAX_HEAD_DIM})")
    if q.shape[-1] == 0:
        _fail(ValueError, "q", "a tensor with head dim >= 1", tuple(q.shape))
    heads, kv_heads = q.shape[-2], k.shape[-2]
    if kv_heads == 0 or heads % kv_heads != 0:
        raise ValueError(f"flashtile: the number of query heads ({heads}) must be divisible "
                         f"by the number of key/value heads ({kv_heads})")


def check_options(*, dropout_p, window_size, softcap, alibi_slopes, batch, heads, device,
                  softmax_scale=None) -> tuple[int, int]:
    """Scalar options; returns window_size as a pair of ints."""
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        _fail(ValueError, "dropout_p", "a float in [0, 1)", dropout_p)
    if (not isinstance(window_size, (tuple, list)) or len(window_size) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) for w in window_size)):
        _fail(TypeError, "window_size", "a pair of ints (left, right)", window_size)
    if min(window_size) < -1:
        _fail(ValueError, "window_size", "a pair of ints >= -1 (-1 = unbounded)",
              tuple(window_size))
    if not isinstance(softcap, (int, float)) or not 0 <= softcap < math.inf:
        _fail(ValueError, "softcap", "a finite float >= 0 (0 = off)", softcap)
    if softmax_scale is not None:
        if not isinstance(softmax_scale, (int, float)):
            _fail(TypeError, "softmax_scale", "a float or None", type(softmax_scale).__name__)
        if not math.isfinite(softmax_scale):
            _fail(ValueError, "softmax_scale", "a finite float", softmax_scale)
    if alibi_slopes is not None:
        check_tensor("alibi_slopes", alibi_slopes)
        if alibi_slopes.dtype != torch.float32:
            _fail(TypeError, "alibi_slopes", "float32", alibi_slopes.dtype)
        if tuple(alibi_slopes.shape) not in ((heads,), (batch, heads)):
            _fail(ValueError, "alibi_slopes", f"of shape ({heads},) or ({batch}, {heads})",
                  tuple(alibi_slopes.shape))
        if alibi_slopes.device != device:
            _fail(ValueError, "alibi_slopes", f"on {device}", alibi_slopes.device)
    return int(window_size[0]), int(window_size[1])


def check_fp8(q, k, v, q_descale, k_descale, v_descale, *, batch: int, dropout_p,
              return_attn_probs) -> tuple | None:
    """FP8 arguments, after `check_qkv`; returns the descales to hand to the backend.

    Non-fp8 inputs: no descale may be given; returns None. fp8 inputs: each descale
    is None (= 1.0) or a float32 (batch, kv_heads) tensor on q's device (batch = the
    number of sequences for varlen); returns the three as contiguous tensors, ones
    where none was given. FP8 is forward-only: dropout, return_attn_probs and
    inputs that require grad (under grad mode) raise NotImplementedError.
    """
    given = (("q_descale", q_descale), ("k_descale", k_descale), ("v_descale", v_descale))
    if not is_fp8(q):
        for name, x in given:
            if x is not None:
                raise ValueError(f"flashtile: `{name}` applies to float8_e4m3fn q, k, v only; "
                                 f"got {q.dtype} inputs (pass None)")
        return None
    if dropout_p > 0:
        raise NotImplementedError(f"flashtile: FP8 (float8_e4m3fn) attention does not "
                                  f"support dropout; got dropout_p={dropout_p}")
    if return_attn_probs:
        raise NotImplementedError("flashtile: FP8 (float8_e4m3fn) attention does not support "
                                  "return_attn_probs=True")
    kv_heads = k.shape[-2]
    shape = (batch, kv_heads)
    ones = None
    descales = []
    for name, x in given:
        if x is None:
            if ones is None:
                ones = torch.ones(shape, dtype=torch.float32, device=q.device)
            descales.append(ones)
            continue
        check_tensor(name, x)
        if x.dtype != torch.float32:
            _fail(TypeError, name, "a float32 tensor", x.dtype)
        if tuple(x.shape) != shape:
            _fail(ValueError, name, f"of shape (batch, kv_heads) = {shape}", tuple(x.shape))
        if x.device != q.device:
            _fail(ValueError, name, f"on {q.device} like q", x.device)
        descales.append(x.contiguous())
    if torch.is_grad_enabled():
        for name, x in (("q", q), ("k", k), ("v", v)) + given:
            if x is not None and x.requires_grad:
                raise NotImplementedError(
                    f"flashtile: FP8 (float8_e4m3fn) attention is forward-only, but `{name}` "
                    f"requires grad; detach it or run under torch.no_grad()")
    return tuple(descales)


def _can_read_values(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (x.is_cuda and torch.cuda.is_current_stream_capturing())


def check_cu_seqlens(name: str, cu_seqlens, total: int, max_seqlen, max_name: str,
                     device) -> None:
    """int32 (B+1,), starts at 0, non-decreasing, ends at `total`, max <= max_seqlen."""
    check_tensor(name, cu_seqlens, ndim=1)
    if cu_seqlens.dtype != torch.int32:
        _fail(TypeError, name, "an int32 tensor", cu_seqlens.dtype)
    if cu_seqlens.numel() < 2:
        _fail(ValueError, name, "of length batch + 1 >= 2", cu_seqlens.numel())
    if cu_seqlens.device != device:
        _fail(ValueError, name, f"on {device} like q", cu_seqlens.device)
    if not isinstance(max_seqlen, int) or max_seqlen < 0:
        _fail(TypeError, max_name, "an int >= 0", max_seqlen)
    if not _can_read_values(cu_seqlens):
        return
    values = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(values, values[1:])]
    if values[0] != 0 or min(lengths) < 0:
        _fail(ValueError, name, "non-decreasing and starting at 0", values[:8])
    if values[-1] != total:
        _fail(ValueError, name, f"ending at the total length {total}", values[-1])
    if max(lengths) > max_seqlen:
        _fail(ValueError, max_name, f">= the longest sequence ({max(lengths)})", max_seqlen)


def check_packed(name: str, x, ndim: int, dim: int, size: int) -> None:
    """A packed qkv / kv tensor: `ndim` dims with `size` (3 or 2) along `dim`."""
    check_tensor(name, x, ndim=ndim)
    if x.shape[dim] != size:
        _fail(ValueError, name, f"of size {size} along dim {dim} (packed "
              f"{'q, k, v' if size == 3 else 'k, v'})", f"shape {tuple(x.shape)}")
