"""Rotary position embeddings (RoPE), as flash_attn applies them to q and new k."""

from __future__ import annotations

import torch


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 positions: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate the first ``rotary_dim = 2 * cos.shape[-1]`` channels of x.

    Args:
        x: (B, S, H, D).
        cos, sin: (seqlen_ro, rotary_dim / 2).
        positions: (B, S) integer positions into cos/sin.
        interleaved: rotate channel pairs (0, 1), (2, 3), ... (GPT-J) if True,
            else the two halves (0, rd/2), (1, rd/2 + 1), ... (GPT-NeoX).
    """
    rd = 2 * cos.shape[-1]
    c = cos[positions].unsqueeze(2).float()  # (B, S, 1, rd/2)
    s = sin[positions].unsqueeze(2).float()
    rot = x[..., :rd].float()
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    else:
        x1, x2 = rot.chunk(2, dim=-1)
        rot = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return torch.cat((rot.to(x.dtype), x[..., rd:]), dim=-1)
