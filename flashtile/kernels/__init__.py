"""Triton kernels of flashtile: exact FlashAttention-2 forward and backward.

`attention_forward` / `attention_backward` are what the public API calls for
CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``); ``flashtile.torch_path``
implements the same contract in plain PyTorch.

Contract (inputs arrive validated; only the last dim is guaranteed contiguous):

* Dense: q (B, Sq, H, D), k/v (B, Sk, Hk, D), cu_seqlens_* None. Varlen: q (Tq, H, D),
  k/v (Tk, Hk, D), cu_seqlens_* int32 (B+1,) on the device; max_seqlen_* bound the
  per-item lengths. H % Hk == 0; query head h uses KV head h // (H // Hk). D <= 256.
* Query i of an item with lengths (sq, sk) sees key j iff
  ``i + sk - sq - window_left <= j <= i + sk - sq + window_right`` (a side set to -1
  is unbounded; causal is window_right = 0) and 0 <= j < sk.
* Scores: softmax_scale * q.k, then softcap * tanh(s / softcap) if softcap > 0,
  then ALiBi -slope[b, h] * |i + sk - sq - j| (alibi_slopes fp32 (B, H) or None).
* Dropout (dropout_p > 0): seed is an int64 (1,) device tensor. Element (b, h, i, j)
  is kept iff Philox(key=seed, counter=(i * max_seqlen_k + j, b * H + h, 0, 0))'s
  first word, as a uniform in [0, 1), is >= dropout_p; kept values are scaled by
  1 / (1 - dropout_p). The backward regenerates the same mask.
* attention_forward -> (out like q, lse fp32 natural log (B, H, Sq) or (H, Tq),
  probs or None). Rows that see no key: out 0, lse -inf. probs (return_probs):
  fp32 (B, H, max_seqlen_q, max_seqlen_k), softmax before dropout, negated where
  dropped, 0 where masked or past the item's lengths.
* attention_backward -> (dq, dk, dv) shaped and typed like q, k, v. The Triton
  kernels use no atomics (bitwise reproducible); the Gluon Hopper kernel
  (backward_hopper.py, dense 16-bit d64 / d128 / d256) reduce-adds dQ, so it is skipped
  when ``deterministic`` is set.
* fp32 inputs: tl.dot uses tf32 ("tf32", default) or full fp32 ("ieee").
* FP8: attention_forward also takes float8_e4m3fn q, k, v with
  ``descales=(q_descale, k_descale, v_descale)``, fp32 (B, Hk) each (q's indexed by
  its KV head): scores use softmax_scale * q_descale * k_descale, the output
  v_descale; out is bf16. No dropout / probs (rejected upstream); forward only.
* Dense 16-bit tiles move through TMA tensor descriptors where the config row says
  so and the layout is 16-byte aligned (`common.descriptor_ok`); otherwise pointers.
"""

from .backward import attention_backward
from .forward import attention_forward

__all__ = ["attention_forward", "attention_backward"]
