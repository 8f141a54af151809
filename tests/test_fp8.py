"""FP8 (float8_e4m3fn) forward: validation, the exact PyTorch path, the quantiser.

The PyTorch path dequantises fp8 inputs with their descales and computes in
float32, so it must match the float64 reference run on the same dequantised
values to bfloat16 output rounding. All on CPU through the PyTorch backend.
"""

import math

import pytest
import torch

import flashtile
from flashtile import autograd
from flashtile.fp8 import FP8_MAX, hadamard_transform, quantize_fp8
from flashtile.reference import attention_ref

FP8 = torch.float8_e4m3fn


@pytest.fixture(autouse=True)
def torch_backend():
    with flashtile.use_backend("torch"):
        yield


def _inputs(b=2, sq=37, sk=53, h=4, hk=2, d=64, seed=0, outliers=None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, sq, h, d, generator=gen)
    k = torch.randn(b, sk, hk, d, generator=gen)
    v = torch.randn(b, sk, hk, d, generator=gen)
    if outliers is not None:
        channels, factor = outliers
        q[..., channels] *= factor
        k[..., channels] *= factor
    return q, k, v


def _fp8_inputs(**kw):
    q8, k8, v8, qd, kd, vd = quantize_fp8(*_inputs(**kw))
    return (q8, k8, v8), dict(q_descale=qd, k_descale=kd, v_descale=vd)


def _assert_matches_ref(out, ref):
    """bf16 output of an fp32 computation vs float64: bf16 rounding (2^-9 relative)
    plus float32-level slack."""
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    err = (out.double() - ref).abs()
    bound = ref.abs() * 2.0 ** -8 + 1e-5 * max(ref.abs().max().item(), 1.0)
    assert (err <= bound).all(), f"max error {err.max().item():.3e}"


# ================================================================== validation


def test_descale_with_non_fp8_inputs():
    q, k, v = _inputs()
    with pytest.raises(ValueError, match=r"`k_descale` applies to float8_e4m3fn"):
        flashtile.flash_attn_func(q, k, v, k_descale=torch.ones(2, 2))


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_mixed_fp8_and_other(which):
    t = dict(zip("qkv", _inputs()))
    t[which] = t[which].to(FP8)
    with pytest.raises(TypeError, match=r"must all be float8_e4m3fn if one is"):
        flashtile.flash_attn_func(t["q"], t["k"], t["v"])


def test_other_fp8_format_rejected():
    q, k, v = (x.to(torch.float8_e5m2) for x in _inputs())
    with pytest.raises(TypeError, match=r"`q` must be float16, bfloat16 or float32 "
                                        r"\(or float8_e4m3fn"):
        flashtile.flash_attn_func(q, k, v)


def test_fp8_rejected_where_unsupported():
    q, k, v = (x.to(FP8) for x in _inputs(b=1, sq=1, h=2, hk=2))
    with pytest.raises(TypeError, match=r"`q` must be float16, bfloat16 or float32, got"):
        flashtile.flash_attn_with_kvcache(q, k, v)


@pytest.mark.parametrize("name", ["q_descale", "k_descale", "v_descale"])
@pytest.mark.parametrize("bad, exc, msg", [
    (torch.ones(2, 4), ValueError, r"of shape \(batch, kv_heads\) = \(2, 2\)"),
    (torch.ones(2), ValueError, r"of shape \(batch, kv_heads\)"),
    (torch.ones(2, 2, dtype=torch.float64), TypeError, r"a float32 tensor"),
    (torch.ones(2, 2, dtype=torch.bfloat16), TypeError, r"a float32 tensor"),
    (1.0, TypeError, r"a torch.Tensor"),
    (torch.ones(2, 2, device="meta"), ValueError, r"on cpu like q"),
])
def test_bad_descale(name, bad, exc, msg):
    qkv, _ = _fp8_inputs()
    with pytest.raises(exc, match=rf"`{name}` must be {msg}"):
        flashtile.flash_attn_func(*qkv, **{name: bad})


def test_varlen_descale_shape_is_sequences_by_kv_heads():
    qkv, _ = _fp8_inputs(b=1, sq=10, sk=10)
    q, k, v = (x[0] for x in qkv)
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"`q_descale` must be of shape .* = \(2, 2\)"):
        flashtile.flash_attn_varlen_func(q, k, v, cu, cu, 7, 7, q_descale=torch.ones(1, 2))


@pytest.mark.parametrize("kw, msg", [
    (dict(dropout_p=0.1), r"does not support dropout"),
    (dict(return_attn_probs=True), r"does not support return_attn_probs=True"),
])
def test_fp8_unsupported_options(kw, msg):
    qkv, scales = _fp8_inputs()
    with pytest.raises(NotImplementedError, match=msg):
        flashtile.flash_attn_func(*qkv, **scales, **kw)


@pytest.mark.parametrize("which", ["q", "k", "v", "q_descale"])
def test_fp8_is_forward_only(which):
    qkv, scales = _fp8_inputs()
    t = dict(zip("qkv", qkv), **scales)
    t[which] = t[which].detach().clone().requires_grad_()
    with pytest.raises(NotImplementedError, match=rf"forward-only, but `{which}` requires grad"):
        flashtile.flash_attn_func(**t)
    with torch.no_grad():  # no gradient wanted: fine
        out = flashtile.flash_attn_func(**t)
    assert out.dtype == torch.bfloat16 and not out.requires_grad


# ================================================================== PyTorch path vs reference


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("options", [
    dict(),
    dict(causal=True),
    dict(window_size=(9, 3)),
    dict(softcap=5.0, causal=True),
    dict(alibi_slopes="BH", window_size=(-1, 7)),
    dict(softmax_scale=0.3),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_dense_matches_reference(options, kv_heads):
    options = dict(options)
    if options.get("alibi_slopes") == "BH":
        options["alibi_slopes"] = torch.rand(2, 4) * 0.3
    qkv, scales = _fp8_inputs(hk=kv_heads, seed=kv_heads)
    out = flashtile.flash_attn_func(*qkv, **scales, **options)
    ref, _ = attention_ref(*qkv, **scales, **options)
    _assert_matches_ref(out, ref)


def test_odd_head_dim_and_default_descales():
    q, k, v = (x.clamp(-4, 4).to(FP8) for x in _inputs(d=59, h=6, hk=2))
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    ref, _ = attention_ref(q, k, v, causal=True)
    _assert_matches_ref(out, ref)
    # an explicit descale of ones is the same thing, and descales scale as documented
    ones = torch.ones(2, 2)
    assert torch.equal(out, flashtile.flash_attn_func(q, k, v, causal=True, q_descale=ones))
    vd = torch.tensor([[0.5, 2.0], [4.0, 0.25]])
    out2 = flashtile.flash_attn_func(q, k, v, causal=True, v_descale=vd)
    expect = out.float().unflatten(2, (2, 3)) * vd[:, None, :, None, None]
    torch.testing.assert_close(out2.float(), expect.flatten(2, 3), rtol=2 ** -7, atol=1e-6)


def test_lse_matches_reference():
    qkv, scales = _fp8_inputs()
    out, lse, _ = autograd.attention(*qkv, None, None, 37, 53, 0.125, -1, 0, 0.0, None, 0.0,
                                     None, False, "tf32", False, *scales.values())
    ref, ref_lse = attention_ref(*qkv, **scales, softmax_scale=0.125, causal=True)
    _assert_matches_ref(out, ref)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=1e-6, atol=1e-6)


def _unpad(x, lengths):
    return torch.cat([x[b, :n] for b, n in enumerate(lengths)])


def _pad(x, lengths, seqlen):
    out = x.new_zeros(len(lengths), seqlen, *x.shape[1:])
    start = 0
    for b, n in enumerate(lengths):
        out[b, :n] = x[start:start + n]
        start += n
    return out


def _cu(lengths):
    return torch.tensor([0] + lengths).cumsum(0).to(torch.int32)


@pytest.mark.parametrize("options", [dict(), dict(causal=True), dict(window_size=(9, 3))],
                         ids=str)
def test_varlen_matches_reference(options):
    lens_q, lens_k = [37, 0, 64, 5], [53, 11, 29, 64]
    q, k, v = _inputs(b=4, sq=64, sk=64, h=6, hk=2, d=40, seed=3)
    pq, pk, pv = _unpad(q, lens_q), _unpad(k, lens_k), _unpad(v, lens_k)
    *qkv8, qd, kd, vd = quantize_fp8(pq, pk, pv, cu_seqlens_q=_cu(lens_q),
                                     cu_seqlens_k=_cu(lens_k))
    assert qd.shape == (4, 2)
    out = flashtile.flash_attn_varlen_func(*qkv8, _cu(lens_q), _cu(lens_k), 64, 64,
                                           q_descale=qd, k_descale=kd, v_descale=vd,
                                           **options)
    masks = [torch.arange(64)[None] < torch.tensor(n)[:, None] for n in (lens_q, lens_k)]
    dense = [_pad(x.float(), n, 64) for x, n in zip(qkv8, (lens_q, lens_k, lens_k))]
    ref, _ = attention_ref(*dense, q_descale=qd, k_descale=kd, v_descale=vd,
                           query_padding_mask=masks[0], key_padding_mask=masks[1], **options)
    _assert_matches_ref(_pad(out, lens_q, 64), ref)


def test_packed_variants_match_unpacked():
    qkv8, scales = _fp8_inputs(hk=4, sk=37)
    q, k, v = qkv8
    ref = flashtile.flash_attn_func(q, k, v, causal=True, **scales)
    packed = torch.stack([q, k, v], dim=2)
    out = flashtile.flash_attn_qkvpacked_func(packed, causal=True, **scales)
    assert torch.equal(out, ref)
    out = flashtile.flash_attn_kvpacked_func(q, torch.stack([k, v], dim=2), causal=True,
                                             **scales)
    assert torch.equal(out, ref)
    cu = torch.tensor([0, 37, 74], dtype=torch.int32)
    # varlen: the same two sequences, so the same (B, Hk) descales
    flat = packed.reshape(74, 3, 4, 64)
    out = flashtile.flash_attn_varlen_qkvpacked_func(flat, cu, 37, causal=True, **scales)
    assert torch.equal(out.view(2, 37, 4, 64), ref)


def test_paged_varlen():
    qkv8, scales = _fp8_inputs(b=1, sq=40, sk=40, hk=2, d=32)
    q, k, v = (x[0] for x in qkv8)
    page = 16
    table = torch.tensor([[2, 0, 1]], dtype=torch.int32)
    k_cache = torch.zeros(3, page, 2, 32).to(FP8)
    v_cache = torch.zeros(3, page, 2, 32).to(FP8)
    pos = torch.arange(40)
    k_cache[table[0, pos // page].long(), pos % page] = k
    v_cache[table[0, pos // page].long(), pos % page] = v
    cu = torch.tensor([0, 40], dtype=torch.int32)
    out = flashtile.flash_attn_varlen_func(q, k_cache, v_cache, cu, cu, 40, 40, causal=True,
                                           block_table=table, **scales)
    ref = flashtile.flash_attn_varlen_func(q, k, v, cu, cu, 40, 40, causal=True, **scales)
    assert torch.equal(out, ref)


def test_compile_fullgraph_and_opcheck():
    qkv, scales = _fp8_inputs()
    fn = torch.compile(lambda q, k, v, qd, kd, vd: flashtile.flash_attn_func(
        q, k, v, causal=True, q_descale=qd, k_descale=kd, v_descale=vd), fullgraph=True)
    out = fn(*qkv, *scales.values())
    assert torch.equal(out, flashtile.flash_attn_func(*qkv, causal=True, **scales))
    # no descales given: the interface fills in ones inside the graph
    plain = torch.compile(lambda q, k, v: flashtile.flash_attn_func(q, k, v, window_size=(5, 2)),
                          fullgraph=True)
    assert torch.equal(plain(*qkv), flashtile.flash_attn_func(*qkv, window_size=(5, 2)))
    args = (*qkv, None, None, 37, 53, 0.2, -1, 0, 0.0, None, 0.0, None, False, "tf32", False,
            *scales.values())
    # test_schema compares inputs with torch.allclose, which fp8 CPU tensors lack
    result = torch.library.opcheck(autograd.attention_forward, args, test_utils=(
        "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    assert set(result.values()) == {"SUCCESS"}


# ================================================================== quantize_fp8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_shapes_and_rounding(dtype):
    q, k, v = (x.to(dtype) for x in _inputs(h=6, hk=2, outliers=([5], 20.0)))
    q8, k8, v8, qd, kd, vd = quantize_fp8(q, k, v)
    for x, x8, d in ((q, q8, qd), (k, k8, kd), (v, v8, vd)):
        assert x8.dtype == FP8 and x8.shape == x.shape
        assert d.dtype == torch.float32 and d.shape == (2, 2)
        groups = x8.float().unflatten(2, (2, -1))  # (B, S, Hk, G, D)
        # the largest magnitude of every (batch, KV head) group lands on 448
        assert torch.equal(groups.abs().amax(dim=(1, 3, 4)), torch.full((2, 2), FP8_MAX))
        deq = (groups * d[:, None, :, None, None]).flatten(2, 3)
        err = (deq.double() - x.double()).abs()
        # e4m3: 3 mantissa bits (relative 2^-4), subnormal step 2^-9 (half: 2^-10)
        step = d.double().repeat_interleave(x.shape[2] // 2, dim=1)[:, None, :, None]
        assert (err <= x.double().abs() * 2.0 ** -4 + step * 2.0 ** -10 + 1e-12).all()


def test_quantize_zero_group_and_errors():
    q, k, v = _inputs()
    k[1, :, 0] = 0
    *_, kd, _ = quantize_fp8(q, k, v)
    assert kd[1, 0] == 1.0
    with pytest.raises(ValueError, match=r"power of two, got head_dim=48"):
        quantize_fp8(*_inputs(d=48), incoherent=True)
    with pytest.raises(TypeError, match=r"`k` must be a float16"):
        quantize_fp8(q, k.to(FP8), v)
    with pytest.raises(ValueError, match=r"`cu_seqlens_k` needs `cu_seqlens_q`"):
        quantize_fp8(q, k, v, cu_seqlens_k=torch.tensor([0, 3], dtype=torch.int32))


def test_quantize_varlen_matches_dense_per_sequence():
    q, k, v = _inputs(b=3, sq=20, sk=20, seed=4)
    dense = quantize_fp8(q, k, v)
    cu = torch.tensor([0, 20, 40, 60], dtype=torch.int32)
    flat = quantize_fp8(*(x.reshape(60, *x.shape[2:]) for x in (q, k, v)), cu_seqlens_q=cu)
    for a, b in zip(dense[:3], flat[:3]):
        assert torch.equal(a.float().reshape(b.shape), b.float())
    for a, b in zip(dense[3:], flat[3:]):
        assert torch.equal(a, b)


# ================================================================== Hadamard / incoherent


def _sylvester(d):
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("d", [1, 2, 16, 128])
def test_hadamard_is_the_documented_orthogonal_matrix(d):
    # rows of the identity are the basis vectors e_j; M e_j is column j of M
    m = hadamard_transform(torch.eye(d, dtype=torch.float64), seed=7).T
    torch.testing.assert_close(m @ m.T, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
    signs = torch.diagonal(_sylvester(d) @ m) / math.sqrt(d)  # H H = D I, so H M = sqrt(D) diag(s)
    assert set(signs.round().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(m, _sylvester(d) * signs / math.sqrt(d), rtol=0, atol=1e-12)
    if d > 2:
        other = hadamard_transform(torch.eye(d, dtype=torch.float64), seed=8).T
        assert not torch.equal(m, other)


def test_hadamard_keeps_dot_products():
    q, k, _ = (x.double() for x in _inputs(d=128, h=2, hk=2))
    qt, kt = hadamard_transform(q, seed=3), hadamard_transform(k, seed=3)
    assert qt.dtype == torch.float64
    scores = torch.einsum("bihd,bjhd->bhij", q, k)
    torch.testing.assert_close(torch.einsum("bihd,bjhd->bhij", qt, kt), scores,
                               rtol=0, atol=1e-11)
    assert hadamard_transform(q.bfloat16(), seed=3).dtype == torch.float32
    with pytest.raises(ValueError, match=r"head_dim=3"):
        hadamard_transform(torch.ones(2, 3))


def test_incoherent_processing_cuts_outlier_error():
    q, k, v = _inputs(b=2, sq=128, sk=128, h=4, hk=2, d=64, outliers=([3, 17, 40], 30.0))
    ref, _ = attention_ref(q, k, v)

    def rmse(incoherent):
        *qkv8, qd, kd, vd = quantize_fp8(q, k, v, incoherent=incoherent, seed=0)
        out = flashtile.flash_attn_func(*qkv8, q_descale=qd, k_descale=kd, v_descale=vd)
        return (out.double() - ref).pow(2).mean().sqrt().item()

    plain, incoherent = rmse(False), rmse(True)
    assert incoherent * 2 <= plain, (plain, incoherent)


# ============================================ the kernel's shuffle-free P layout


@pytest.mark.parametrize("seqlen", [16, 45, 128])
def test_permuted_v_matches_kernel_key_order(seqlen):
    """`transposed_v(permute_keys=True)` stores keys in exactly the order in which
    `_permute_keys` moves P's columns (here the same reshape / permute in torch, one
    64-key tile at a time), so P'.V'^T = P.V; padded keys are zero."""
    from flashtile.kernels.layout import transposed_v
    gen = torch.Generator().manual_seed(seqlen)
    v = torch.randn(2, seqlen, 3, 8, generator=gen).to(FP8)
    view, vt, stride_d = transposed_v(v, permute_keys=True)
    padded = vt.shape[-1]
    assert padded % 16 == 0 and padded - seqlen < 16 and stride_d == padded
    assert view.shape == (2, padded, 3, 8) and view.stride(1) == 1
    p = torch.randn(2, 3, 5, padded, generator=gen, dtype=torch.float64)
    p_perm = (p.view(2, 3, 5, padded // 16, 2, 2, 2, 2).permute(0, 1, 2, 3, 5, 6, 4, 7)
              .reshape(2, 3, 5, padded))
    v_full = torch.zeros(2, padded, 3, 8, dtype=torch.float64)
    v_full[:, :seqlen] = v.double()
    expected = torch.einsum("bhmn,bnhd->bhmd", p, v_full)
    got = torch.einsum("bhmn,bhdn->bhmd", p_perm, vt.double())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    plain = transposed_v(v, permute_keys=False)[1]
    assert torch.equal(plain.float(), v.float().permute(0, 2, 3, 1))


@pytest.mark.parametrize("permute_keys", [True, False])
@pytest.mark.parametrize("shape", [(2, 45, 3, 59), (1, 203, 2, 128), (3, 16, 1, 256)])
def test_transpose_kernel_matches_torch_views(shape, permute_keys):
    """The one-pass transpose kernel stores byte for byte what torch's views give
    (`reference.transposed_v_ref`), from a V whose rows are not contiguous."""
    from flashtile.kernels.layout import transposed_v
    from flashtile.reference import transposed_v_ref
    gen = torch.Generator().manual_seed(sum(shape))
    batch, seqlen, heads, dim = shape
    wide = torch.randn(batch, seqlen, heads, dim + 5, generator=gen).to(FP8)
    v = wide[..., :dim]  # strided rows, contiguous channels
    view, vt, stride_d = transposed_v(v, permute_keys)
    ref = transposed_v_ref(v, permute_keys)
    assert vt.shape == ref.shape and stride_d == vt.shape[-1]
    assert torch.equal(vt.view(torch.uint8), ref.view(torch.uint8))
    assert torch.equal(view.view(torch.uint8), ref.permute(0, 3, 1, 2).view(torch.uint8))
    if not permute_keys:  # varlen layout: (total, Hk, D) -> (Hk, D, total)
        packed = v.reshape(batch * seqlen, heads, dim)
        _, vt_packed, _ = transposed_v(packed, False)
        assert torch.equal(vt_packed.view(torch.uint8),
                           transposed_v_ref(packed, False).view(torch.uint8))


def test_transpose_kernel_past_the_grid_limit(monkeypatch):
    """More (batch, KV head) pairs than a grid axis takes: the launch continues on axis 2
    (`config.batch_head_grid`, its limit lowered here) and every pair is copied."""
    from flashtile.kernels import config
    from flashtile.kernels.launcher import clear_plans
    from flashtile.kernels import layout
    from flashtile.reference import transposed_v_ref
    monkeypatch.setattr(config, "MAX_GRID_YZ", 6)  # 18 pairs: 6 on axis 1 x 3 on axis 2
    clear_plans()
    v = torch.randn(6, 20, 3, 16, generator=torch.Generator().manual_seed(1)).to(FP8)
    _, vt, _ = layout.transposed_v(v, True)
    (plan,) = layout._PLANS._plans.values()  # (the interpreter does not enforce the limit)
    clear_plans()
    assert plan.grid[1:] == (6, 3)
    assert torch.equal(vt.view(torch.uint8), transposed_v_ref(v, True).view(torch.uint8))
