"""RotaryEmbedding: a module around `flashtile.rotary.apply_rotary` (RoPE).

The rotation itself lives in `flashtile.rotary.apply_rotary` (the code that
`flash_attn_with_kvcache` uses too); this module only builds the cos/sin
tables, in float32, for the positions it is given.
"""

from __future__ import annotations

import torch
from torch import nn

from flashtile.rotary import apply_rotary


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings on the first `dim` channels of each head.

    Args:
        dim: rotary dimension (even, at most the head dim); channels past it are
            left unchanged (partial rotary).
        base: frequency base; channel pair i turns by ``pos * base ** (-2i / dim)``.
        interleaved: rotate pairs (0, 1), (2, 3), ... (GPT-J) if True, else the
            two halves (GPT-NeoX), as `flash_attn`'s ``rotary_interleaved``.

    The inverse frequencies are recomputed in float32 on each call rather than
    stored as a buffer, so ``module.half()`` / ``.to(bfloat16)`` cannot round
    them; the rotated tensors keep their dtype (the rotation runs in float32).
    """

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"flashtile: rotary `dim` must be a positive even int, got {dim}")
        self.dim, self.base, self.interleaved = int(dim), float(base), bool(interleaved)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, interleaved={self.interleaved}"

    def inv_freq(self, device) -> torch.Tensor:
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim
        return 1.0 / (self.base ** exponent)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 tables (*positions.shape, dim / 2) for any integer positions."""
        freqs = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq(positions.device)
        return torch.cos(freqs), torch.sin(freqs)

    def table(self, seqlen: int, device, offset: int = 0):
        """(cos, sin), each (seqlen, dim / 2), for positions offset ... offset + seqlen - 1.

        The form `flashtile.flash_attn_with_kvcache` takes as rotary_cos / rotary_sin.
        """
        return self.cos_sin(torch.arange(offset, offset + seqlen, device=device))

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, S, H, D) at positions (S,) (shared by the batch) or (B, S)."""
        batch, seqlen = x.shape[0], x.shape[1]
        if positions.dim() == 1:  # one table row per position, shared by every sequence
            cos, sin = self.cos_sin(positions)
            index = torch.arange(seqlen, device=x.device).expand(batch, seqlen)
        else:  # one table row per token
            cos, sin = self.cos_sin(positions.reshape(-1))
            index = torch.arange(batch * seqlen, device=x.device).view(batch, seqlen)
        return apply_rotary(x, cos, sin, index, self.interleaved)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """Rotate q (B, S, H, D) and k (B, S, Hk, D) at the same positions."""
        return self.rotate(q, positions), self.rotate(k, positions)
