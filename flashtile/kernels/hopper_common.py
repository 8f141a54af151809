"""Host-side pieces shared by the Gluon Hopper kernels (forward_hopper.py,
backward_hopper.py): tensor descriptors and the dispatch rules they have in common."""

from __future__ import annotations

import torch
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .common import descriptor_ok, forward_flops
from .config import interpreter_active

GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16,
             torch.float8_e4m3fn: gl.float8e4nv, torch.float32: gl.float32}


def descriptor(x: torch.Tensor, block_shape: list[int]) -> TensorDescriptor:
    """A TMA descriptor over all of x with its default NVMMA (swizzled) layout."""
    layout = gl.NVMMASharedLayout.get_default_for(block_shape, GL_DTYPES[x.dtype])
    return TensorDescriptor(x, list(x.shape), list(x.stride()), block_shape, layout)


def dense_call_ok(q, k, tensors, *, softmax_scale, window_left, window_right, softcap,
                  alibi_slopes, dropout_p, min_flops: float) -> bool:
    """The rules both Gluon kernels share: dense (B, S, H, D) CUDA tensors on sm_90 (not
    the interpreter), causal or full attention with no softcap / ALiBi / dropout,
    softmax_scale > 0, at least `min_flops` of forward work (smaller calls are
    host-bound), non-empty sequences and TMA-aligned `tensors`. The dtype and head dim
    rules are each kernel's own."""
    if not (q.is_cuda and q.dim() == 4) or interpreter_active():
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return False
    if window_left != -1 or window_right not in (-1, 0):
        return False
    if softcap != 0.0 or alibi_slopes is not None or dropout_p > 0.0 or softmax_scale <= 0:
        return False
    batch, seqlen_q, heads, head_dim = q.shape
    if forward_flops(batch, heads, seqlen_q, k.shape[1], head_dim,
                     window_right == 0) < min_flops:
        return False
    return min(seqlen_q, k.shape[1]) > 0 and descriptor_ok(*tensors)
