"""flash_attn_with_kvcache on the PyTorch path: cache append, rotary, paging, leftpad."""

import math

import pytest
import torch

import flashtile
from flashtile.reference import attention_ref


def rotary_ref(x, positions, base_angles, interleaved):
    """RoPE through complex multiplication (independent of flashtile.rotary)."""
    rd = 2 * base_angles.shape[0]
    rot = x[..., :rd].double()
    if interleaved:
        pairs = torch.complex(rot[..., 0::2], rot[..., 1::2])
    else:
        pairs = torch.complex(rot[..., : rd // 2], rot[..., rd // 2:])
    angle = positions[..., None, None].double() * base_angles.double()  # (B, S, 1, rd/2)
    pairs = pairs * torch.polar(torch.ones_like(angle), angle)
    if interleaved:
        rot = torch.stack((pairs.real, pairs.imag), dim=-1).flatten(-2)
    else:
        rot = torch.cat((pairs.real, pairs.imag), dim=-1)
    return torch.cat((rot.to(x.dtype), x[..., rd:]), dim=-1)


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("rotary_fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seqlen_q,new", [(1, 1), (3, 3), (5, 0)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("leftpad", [False, True])
def test_kvcache(paged, rotary_fraction, seqlen_q, new, causal, leftpad):
    torch.manual_seed(seqlen_q * 7 + new)
    B, H, Hk, D, S, page = 3, 6, 2, 32, 96, 16
    interleaved = bool(seqlen_q % 2)
    q = torch.randn(B, seqlen_q, H, D)
    k_full = torch.randn(B, S, Hk, D)
    v_full = torch.randn(B, S, Hk, D)
    seqlens = torch.tensor([40, 7, 90 - new], dtype=torch.int32)
    pad = torch.tensor([5, 0, 30], dtype=torch.int32) if leftpad else torch.zeros(B, dtype=torch.int32)
    k_new, v_new = torch.randn(B, new, Hk, D), torch.randn(B, new, Hk, D)
    rd = int(rotary_fraction * D) // 2 * 2
    angles = 1.0 / (10000 ** (torch.arange(0, rd, 2).float() / max(rd, 1)))
    cos = sin = None
    if rd:
        t = torch.arange(S).float()[:, None] * angles
        cos, sin = torch.cos(t), torch.sin(t)

    if paged:
        table = torch.randperm(B * S // page).view(B, S // page).to(torch.int32)
        k_cache = torch.zeros(B * S // page, page, Hk, D)
        v_cache = torch.zeros_like(k_cache)
        for b in range(B):
            pos = torch.arange(S)
            k_cache[table[b, pos // page].long(), pos % page] = k_full[b]
            v_cache[table[b, pos // page].long(), pos % page] = v_full[b]
    else:
        table, k_cache, v_cache = None, k_full.clone(), v_full.clone()

    out, lse = flashtile.flash_attn_with_kvcache(
        q, k_cache, v_cache, k_new if new else None, v_new if new else None,
        rotary_cos=cos, rotary_sin=sin, cache_seqlens=seqlens,
        cache_leftpad=pad if leftpad else None, block_table=table, causal=causal,
        rotary_interleaved=interleaved, return_softmax_lse=True)

    # Expected cache: new keys (rotated) written at seqlens[b].
    k_exp, v_exp = k_full.clone(), v_full.clone()
    for b in range(B):
        n = int(seqlens[b])
        kn = k_new[b:b + 1]
        if rd and new:
            kn = rotary_ref(kn, torch.arange(n, n + new)[None], angles, interleaved)
        k_exp[b, n:n + new], v_exp[b, n:n + new] = kn[0], v_new[b]
    if paged:
        got_k = torch.stack([k_cache[table[b, torch.arange(S) // page].long(), torch.arange(S) % page] for b in range(B)])
    else:
        got_k = k_cache
    torch.testing.assert_close(got_k, k_exp, atol=1e-5, rtol=1e-5)

    for b in range(B):
        lo, hi = int(pad[b]), int(seqlens[b]) + new
        start = int(seqlens[b])  # rotary positions are cache indices, leftpad or not
        qb = q[b:b + 1]
        if rd:
            steps = torch.arange(seqlen_q)[None] if causal else torch.zeros(1, seqlen_q, dtype=torch.long)
            qb = rotary_ref(qb, start + steps, angles, interleaved)
        ref, ref_lse = attention_ref(qb, k_exp[b:b + 1, lo:hi], v_exp[b:b + 1, lo:hi], causal=causal)
        torch.testing.assert_close(out[b:b + 1].double(), ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lse[b:b + 1].double(), ref_lse, atol=2e-5, rtol=1e-4)
    assert math.isfinite(out.abs().sum().item())
