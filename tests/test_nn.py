"""flashtile.nn.MultiHeadAttention against a float64 PyTorch reference (CPU)."""

import math

import pytest
import torch

import flashtile
from flashtile.nn import KVCache, MultiHeadAttention, RotaryEmbedding, get_alibi_slopes

E, H, HK = 48, 6, 2  # head_dim 8


@pytest.fixture(autouse=True)
def _torch_backend():
    with flashtile.use_backend("torch"):
        yield


# --------------------------------------------------------------------------------------
# Reference: explicit projections, rotary and softmax attention in float64.
# --------------------------------------------------------------------------------------

def _params(mha, requires_grad=False):
    return {n: p.detach().double().requires_grad_(requires_grad)
            for n, p in mha.named_parameters()}


def _linear(p, name, x):
    bias = p.get(name + ".bias")
    y = x @ p[name + ".weight"].T
    return y if bias is None else y + bias


def _rotary_ref(x, positions, dim, base, interleaved):
    """x (n, h, d) float64, positions (n,)."""
    if dim == 0:
        return x
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = positions.double()[:, None] * inv  # (n, dim/2)
    c, s = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    r = x[..., :dim]
    if interleaved:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        r = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), -1).flatten(-2)
    else:
        x1, x2 = r[..., :dim // 2], r[..., dim // 2:]
        r = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), -1)
    return torch.cat((r, x[..., dim:]), -1)


def reference(mha, x, mask=None, position_offset=0, params=None):
    """float64 output (B, S, E); rows where mask is False are 0."""
    p = _params(mha) if params is None else params
    B, S, _ = x.shape
    h, hk, d = mha.num_heads, mha.num_heads_kv, mha.head_dim
    mask = torch.ones(B, S, dtype=torch.bool) if mask is None else mask
    rows = []
    for b in range(B):
        xb = x[b, mask[b]].double()
        n = xb.shape[0]
        if mha.fused_qkv:
            qkv = _linear(p, "Wqkv", xb)
            q, k, v = qkv.split([h * d, hk * d, hk * d], -1)
        else:
            q, k, v = (_linear(p, name, xb) for name in ("q_proj", "k_proj", "v_proj"))
        q, k, v = q.view(n, h, d), k.view(n, hk, d), v.view(n, hk, d)
        pos = torch.arange(n) + position_offset
        rd = mha.rotary_emb_dim
        if rd:
            base, inter = mha.rotary_emb.base, mha.rotary_emb.interleaved
            q, k = _rotary_ref(q, pos, rd, base, inter), _rotary_ref(k, pos, rd, base, inter)
        k, v = k.repeat_interleave(h // hk, 1), v.repeat_interleave(h // hk, 1)
        scale = mha.softmax_scale or 1 / math.sqrt(d)
        s = torch.einsum("qhd,khd->hqk", q, k) * scale
        if mha.softcap > 0:
            s = mha.softcap * torch.tanh(s / mha.softcap)
        i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        if mha.use_alibi:
            slopes = torch.tensor(get_alibi_slopes(h), dtype=torch.float64)
            s = s - slopes[:, None, None] * (i - j).abs()
        left, right = mha.window_size
        right = 0 if mha.causal else right
        keep = torch.ones(n, n, dtype=torch.bool)
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        s = s.masked_fill(~keep, float("-inf"))
        a = torch.softmax(s, -1).nan_to_num(0.0)
        o = torch.einsum("hqk,khd->qhd", a, v).reshape(n, h * d)
        rows.append(_linear(p, "out_proj", o))
    out = torch.zeros(B, S, mha.embed_dim, dtype=torch.float64)
    for b in range(B):
        out[b, mask[b]] = rows[b].to(out.dtype)
    return out


def _err(a, b):
    return (a.double() - b.double()).abs().max().item()


def _x(B=2, S=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, E, generator=g)


def _mha(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_heads_kv", HK)
    return MultiHeadAttention(E, H, **kw).eval()


# --------------------------------------------------------------------------------------

CONFIGS = {
    "mha_fused": dict(num_heads_kv=H),
    "mha_unfused": dict(num_heads_kv=H, fused_qkv=False),
    "gqa_fused_causal": dict(causal=True),
    "gqa_unfused_causal_nobias": dict(causal=True, fused_qkv=False, qkv_proj_bias=False,
                                      out_proj_bias=False),
    "mqa_window": dict(num_heads_kv=1, window_size=(3, 2)),
    "causal_window": dict(causal=True, window_size=(4, -1)),
    "softcap_scale": dict(softcap=2.0, softmax_scale=0.5),
    "alibi_causal": dict(use_alibi=True, causal=True),
    "alibi_bidirectional": dict(use_alibi=True),
    "rotary_halves": dict(rotary_emb_dim=8, causal=True),
    "rotary_interleaved": dict(rotary_emb_dim=8, rotary_emb_interleaved=True),
    "rotary_partial": dict(rotary_emb_dim=4, rotary_emb_base=100.0, causal=True),
    "rotary_partial_interleaved_unfused": dict(rotary_emb_dim=6, rotary_emb_interleaved=True,
                                               fused_qkv=False, use_alibi=True, softcap=3.0),
    "explicit_head_dim": dict(head_dim=12, rotary_emb_dim=8, causal=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_dense_matches_reference(name):
    mha = _mha(**CONFIGS[name])
    x = _x()
    with torch.no_grad():
        out = mha(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert _err(out, reference(mha, x)) < 1e-5


def test_position_offset():
    mha = _mha(rotary_emb_dim=8, causal=True)
    x = _x(S=7)
    with torch.no_grad():
        out = mha(x, position_offset=11)
    assert _err(out, reference(mha, x, position_offset=11)) < 1e-5
    # RoPE is relative: shifting q and k by the same offset leaves the scores unchanged.
    assert _err(out, mha(x).detach()) < 1e-5


def test_gqa_layout_of_fused_projection():
    mha = _mha()
    assert mha.Wqkv.weight.shape == ((H + 2 * HK) * E // H, E)
    assert mha.out_proj.weight.shape == (E, E)
    unfused = _mha(fused_qkv=False)
    assert unfused.k_proj.weight.shape == (HK * E // H, E)
    assert not hasattr(unfused, "Wqkv")


def test_alibi_slopes():
    assert get_alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)])
    assert get_alibi_slopes(4) == pytest.approx([2.0 ** (-2 * i) for i in range(1, 5)])
    # 6 heads: the 4-head slopes, then the odd-indexed ones of 8 heads (2^-1, 2^-3)
    assert get_alibi_slopes(6) == pytest.approx([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8,
                                                 2.0 ** -1, 2.0 ** -3])
    mha = _mha(use_alibi=True)
    assert "alibi_slopes" in dict(mha.named_buffers())
    assert mha.alibi_slopes.dtype == torch.float32 and mha.alibi_slopes.shape == (H,)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kw", [
    dict(causal=True, rotary_emb_dim=8, use_alibi=True),
    dict(fused_qkv=False, rotary_emb_dim=4, rotary_emb_interleaved=True, window_size=(2, 1),
         softcap=4.0),
], ids=["causal_rotary_alibi", "unfused_window_softcap"])
def test_key_padding_mask(side, kw):
    mha = _mha(**kw)
    B, S = 3, 11
    lengths = torch.tensor([11, 6, 1])
    ar = torch.arange(S)[None, :]
    mask = ar < lengths[:, None] if side == "right" else ar >= (S - lengths)[:, None]
    x = _x(B, S, seed=3)
    with torch.no_grad():
        out = mha(x, key_padding_mask=mask, position_offset=2)
    ref = reference(mha, x, mask, position_offset=2)
    assert _err(out[mask], ref[mask]) < 1e-5
    assert (out[~mask] == 0).all()
    # The full row equals the dense path on that row alone; a short sequence equals
    # the dense path on its real tokens alone (positions counted from its first token).
    with torch.no_grad():
        assert _err(out[0], mha(x[:1], position_offset=2)[0]) < 1e-5
        assert _err(out[1][mask[1]], mha(x[1:2, mask[1]], position_offset=2)[0]) < 1e-5


def test_key_padding_mask_checks():
    mha = _mha()
    x = _x(2, 5)
    with pytest.raises(TypeError, match="bool"):
        mha(x, key_padding_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="shape"):
        mha(x, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))


def test_dropout_train_vs_eval():
    mha = _mha(dropout=0.3, causal=True, rotary_emb_dim=8)
    x = _x()
    mha.train()
    torch.manual_seed(1)
    a = mha(x)
    torch.manual_seed(1)
    b = mha(x)
    torch.manual_seed(2)
    c = mha(x)
    assert torch.equal(a, b)
    assert _err(a, c) > 1e-2
    ref = reference(mha, x)
    assert _err(a, ref) > 1e-2  # dropout is active in training
    # padded (varlen) path too
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False
    torch.manual_seed(1)
    p1 = mha(x, key_padding_mask=mask)
    torch.manual_seed(1)
    p2 = mha(x, key_padding_mask=mask)
    torch.manual_seed(2)
    p3 = mha(x, key_padding_mask=mask)
    assert torch.equal(p1, p2) and _err(p1, p3) > 1e-2 and (p1[~mask] == 0).all()
    mha.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        e1 = mha(x)
        torch.manual_seed(2)
        e2 = mha(x)
    assert torch.equal(e1, e2)
    assert _err(e1, ref) < 1e-5


@pytest.mark.parametrize("kw", [
    dict(rotary_emb_dim=8, use_alibi=True),
    dict(rotary_emb_dim=4, rotary_emb_interleaved=True, window_size=(3, 0), fused_qkv=False),
    dict(num_heads_kv=H, softcap=5.0, rotary_emb_dim=6),
], ids=["gqa_rotary_alibi", "gqa_partial_interleaved_window", "mha_softcap"])
def test_kv_cache_decoding_matches_full_forward(kw):
    mha = _mha(causal=True, **kw)
    B, prefill, steps = 2, 5, 4
    x = _x(B, prefill + steps, seed=7)
    with torch.no_grad():
        full = mha(x)
        cache = mha.allocate_kv_cache(B, 16)
        assert isinstance(cache, KVCache) and cache.k.shape == (B, 16, mha.num_heads_kv, 8)
        outs = [mha(x[:, :prefill], kv_cache=cache)]
        assert cache.seqlens.tolist() == [prefill] * B and cache.seqlens.dtype == torch.int32
        for t in range(prefill, prefill + steps):
            outs.append(mha(x[:, t:t + 1], kv_cache=cache))
        assert cache.seqlens.tolist() == [prefill + steps] * B
    inc = torch.cat(outs, dim=1)
    assert _err(inc, full) < 1e-5
    assert _err(full, reference(mha, x)) < 1e-5


def test_kv_cache_non_causal_prefill_and_layers():
    # Without a causal/window mask the module rotates q itself so every token of a
    # prefill sits at its own position: equal to the dense forward.
    mha = _mha(rotary_emb_dim=8, layer_idx=1)
    x = _x(2, 6, seed=4)
    caches = [None, mha.allocate_kv_cache(2, 8)]
    with torch.no_grad():
        out = mha(x, kv_cache=caches)
        assert _err(out, mha(x)) < 1e-5
        assert caches[1].seqlens.tolist() == [6, 6]
        with pytest.raises(ValueError, match="full"):
            mha(_x(2, 3), kv_cache=caches[1])
    caches[1].reset()
    assert caches[1].seqlens.tolist() == [0, 0]


def test_kv_cache_ragged_lengths():
    # Sequences at different lengths in one cache decode independently.
    mha = _mha(causal=True, rotary_emb_dim=8, use_alibi=True)
    x = _x(2, 7, seed=5)
    with torch.no_grad():
        cache = mha.allocate_kv_cache(2, 10)
        mha(x[:, :4], kv_cache=cache)
        cache.seqlens[1] = 2  # sequence 1 forgets its last two tokens
        out = mha(x[:, 4:5], kv_cache=cache)
        ref0 = mha(x[:1, :5])[:, -1]
        ref1 = mha(torch.cat([x[1:, :2], x[1:, 4:5]], 1))[:, -1]
    assert _err(out[0, 0], ref0[0]) < 1e-5 and _err(out[1, 0], ref1[0]) < 1e-5
    assert cache.seqlens.tolist() == [5, 3]


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    mha = _mha(causal=True, rotary_emb_dim=8, use_alibi=True, softcap=3.0)
    x = _x()
    compiled = torch.compile(mha, fullgraph=True)
    with torch.no_grad():
        eager = mha(x)
        out = compiled(x)
    assert _err(out, eager) < 1e-5
    # autograd through the compiled module
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_match_reference(fused):
    mha = _mha(causal=True, rotary_emb_dim=4, use_alibi=True, fused_qkv=fused,
               window_size=(5, -1))
    mha.train()  # dropout is 0: training mode is deterministic
    x = _x(2, 9, seed=6).requires_grad_()
    g = torch.randn(2, 9, E, generator=torch.Generator().manual_seed(9))
    (mha(x) * g).sum().backward()
    params = _params(mha, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    (reference(mha, x64, params=params) * g.double()).sum().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert _err(p.grad, params[name].grad) < 1e-4, name
    assert _err(x.grad, x64.grad) < 1e-4


def test_gradients_through_padded_path():
    mha = _mha(causal=True, rotary_emb_dim=8)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False
    x = _x(2, 9, seed=8).requires_grad_()
    mha(x, key_padding_mask=mask).square().sum().backward()
    params = _params(mha, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    reference(mha, x64, mask, params=params).square().sum().backward()
    for name, p in mha.named_parameters():
        assert _err(p.grad, params[name].grad) < 1e-4, name
    assert (x.grad[0, :3] == 0).all()
    assert _err(x.grad, x64.grad) < 1e-4


def test_rotary_embedding_module():
    rot = RotaryEmbedding(4, base=50.0, interleaved=True)
    q, k = torch.randn(2, 5, 3, 6), torch.randn(2, 5, 1, 6)
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 3, 0, 9, 2]])
    rq, rk = rot(q, k, pos)
    for b in range(2):
        assert _err(rq[b], _rotary_ref(q[b].double(), pos[b], 4, 50.0, True)) < 1e-5
        assert _err(rk[b], _rotary_ref(k[b].double(), pos[b], 4, 50.0, True)) < 1e-5
    assert torch.equal(rq[..., 4:], q[..., 4:])
    with pytest.raises(ValueError):
        RotaryEmbedding(3)


def test_constructor_checks():
    with pytest.raises(ValueError):
        MultiHeadAttention(48, 6, num_heads_kv=4)
    with pytest.raises(ValueError):
        MultiHeadAttention(50, 6)
    with pytest.raises(ValueError):
        MultiHeadAttention(48, 6, rotary_emb_dim=10)
