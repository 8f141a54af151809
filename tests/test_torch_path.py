"""The exact PyTorch path through the public API, against the float64 reference.

Grid from the foundation issue: odd shapes, head dims up to 256, GQA, causal,
window, softcap, ALiBi and dropout, in float32 and bfloat16, outputs and all
three gradients under FlashAttention's 2x / 3x rule.
"""

import pytest
import torch

import flashtile
from accuracy import check_case

SHAPES = [(1, 1), (1, 147), (113, 203), (128, 217), (256, 512), (512, 256)]
HEAD_DIMS = [32, 59, 64, 111, 128, 256]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(autouse=True)
def torch_backend():
    with flashtile.use_backend("torch"):
        yield


def _inputs(batch, sq, sk, heads, kv_heads, d, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, sq, heads, d, generator=gen)
    k = torch.randn(batch, sk, kv_heads, d, generator=gen)
    v = torch.randn(batch, sk, kv_heads, d, generator=gen)
    return q, k, v


def _dense(**options):
    def run(q, k, v):
        out, _, probs = flashtile.flash_attn_func(q, k, v, return_attn_probs=True, **options)
        return out, probs
    return run


# Every (shape, head dim) pair, each with a different option mix so the grid
# covers all options without a full cross product.
OPTION_MIXES = [
    dict(),
    dict(causal=True),
    dict(window_size=(37, 11)),
    dict(softcap=5.0),
    dict(causal=True, alibi=True),
    dict(window_size=(20, -1), softcap=8.0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid(shape, d, dtype):
    sq, sk = shape
    mix = dict(OPTION_MIXES[(SHAPES.index(shape) + HEAD_DIMS.index(d)) % len(OPTION_MIXES)])
    heads, kv_heads = (6, 2) if d % 2 else (6, 1)  # GQA 6:2 and MQA 6:1
    q, k, v = _inputs(2, sq, sk, heads, kv_heads, d, seed=sq * 1000 + d)
    if mix.pop("alibi", False):
        mix["alibi_slopes"] = torch.rand(2, heads) * 0.3
    check_case(_dense(**mix), q, k, v, dtype=dtype, **mix)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", [
    dict(causal=True),
    dict(window_size=(17, 5)),
    dict(window_size=(0, 0)),
    dict(softcap=3.0, causal=True),
    dict(alibi_slopes="H"),
    dict(alibi_slopes="BH", window_size=(-1, 9)),
    dict(softmax_scale=0.3),
    dict(dropout_p=0.17),
    dict(dropout_p=0.17, causal=True, softcap=4.0),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("kv_heads", [6, 2, 1])
def test_options(options, kv_heads, dtype):
    options = dict(options)
    q, k, v = _inputs(2, 113, 203, 6, kv_heads, 59, seed=kv_heads)
    if options.get("alibi_slopes") == "H":
        options["alibi_slopes"] = torch.rand(6)
    elif options.get("alibi_slopes") == "BH":
        options["alibi_slopes"] = torch.rand(2, 6)
    check_case(_dense(**options), q, k, v, dtype=dtype, **options)


def _unpad(x, lengths):
    return torch.cat([x[b, :n] for b, n in enumerate(lengths)])


def _pad(x, lengths, seqlen):
    out = x.new_zeros(len(lengths), seqlen, *x.shape[1:])
    starts = [0] + torch.tensor(lengths).cumsum(0).tolist()
    for b, n in enumerate(lengths):
        out[b, :n] = x[starts[b]: starts[b] + n]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", [dict(), dict(causal=True), dict(window_size=(9, 3)),
                                     dict(dropout_p=0.2, softcap=5.0)], ids=str)
def test_varlen(options, dtype):
    gen = torch.Generator().manual_seed(7)
    lens_q, lens_k = [37, 0, 64, 5], [53, 11, 29, 64]
    q, k, v = _inputs(4, 64, 64, 6, 2, 40, seed=11)
    cu = lambda n: torch.tensor([0] + n, dtype=torch.int32).cumsum(0).to(torch.int32)

    def run(q, k, v):
        out, _, probs = flashtile.flash_attn_varlen_func(
            _unpad(q, lens_q), _unpad(k, lens_k), _unpad(v, lens_k), cu(lens_q), cu(lens_k),
            64, 64, return_attn_probs=True, **options)
        return _pad(out, lens_q, 64), probs

    masks = [torch.arange(64)[None] < torch.tensor(n)[:, None] for n in (lens_q, lens_k)]
    del gen
    check_case(run, q, k, v, dtype=dtype, query_padding_mask=masks[0],
               key_padding_mask=masks[1], **options)


def test_packed_variants_match_unpacked():
    q, k, v = _inputs(2, 33, 33, 4, 4, 24, seed=3)
    qkv = torch.stack([q, k, v], dim=2).requires_grad_()
    out = flashtile.flash_attn_qkvpacked_func(qkv, causal=True)
    ref = flashtile.flash_attn_func(q, k, v, causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.sum().backward()
    assert qkv.grad.shape == qkv.shape and torch.isfinite(qkv.grad).all()
    kv = torch.stack([k, v], dim=2)
    torch.testing.assert_close(flashtile.flash_attn_kvpacked_func(q, kv), flashtile.flash_attn_func(q, k, v), rtol=0, atol=0)
    cu = torch.tensor([0, 33, 66], dtype=torch.int32)
    flat = qkv.detach().reshape(66, 3, 4, 24)
    varlen = [flashtile.flash_attn_varlen_qkvpacked_func(flat, cu, 33, causal=True),
              flashtile.flash_attn_varlen_kvpacked_func(q.reshape(66, 4, 24), flat[:, 1:], cu, cu,
                                                        33, 33, causal=True)]
    # Varlen runs other matmul shapes than the dense call, and some CPU BLAS builds (seen
    # on an AMD EPYC host) round those differently in the last bit: float32 rounding only.
    for out in varlen:
        torch.testing.assert_close(out.view(2, 33, 4, 24), ref, rtol=1e-5, atol=1e-6)


def test_dropout_rate_and_reproducibility():
    q, k, v = _inputs(1, 512, 512, 4, 4, 32, seed=5)
    p = 0.17
    torch.manual_seed(123)
    out1, _, probs = flashtile.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    rate = torch.signbit(probs).float().mean().item()
    assert abs(rate - p) < 0.01, rate
    torch.manual_seed(123)
    out2 = flashtile.flash_attn_func(q, k, v, dropout_p=p)
    assert torch.equal(out1, out2)
    out3 = flashtile.flash_attn_func(q, k, v, dropout_p=p)
    assert not torch.equal(out1, out3)


def test_backward_deterministic():
    q, k, v = _inputs(2, 97, 131, 6, 2, 48, seed=9)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    dout = torch.randn(2, 97, 6, 48)
    runs = []
    for _ in range(3):
        out = flashtile.flash_attn_func(q, k, v, causal=True, deterministic=True)
        runs.append(torch.autograd.grad(out, (q, k, v), dout))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_paged_varlen_matches_contiguous():
    q, k, v = _inputs(1, 40, 96, 4, 2, 32, seed=12)
    lens = [40, 96]
    keys = torch.cat([k[0], k[0][:0]])
    page = 16
    cache_k = torch.randn(12, page, 2, 32)
    cache_v = torch.randn(12, page, 2, 32)
    table = torch.tensor([[3, 7, 1, 0, 11, 5], [2, 4, 6, 8, 9, 10]], dtype=torch.int32)
    for b, n in enumerate([40, 96]):
        pos = torch.arange(n)
        cache_k[table[b, pos // page].long(), pos % page] = k[0, :n]
        cache_v[table[b, pos // page].long(), pos % page] = v[0, :n]
    qv = torch.cat([q[0], q[0]])
    cu_q = torch.tensor([0, 40, 80], dtype=torch.int32)
    cu_k = torch.tensor([0, 40, 136], dtype=torch.int32)
    out = flashtile.flash_attn_varlen_func(qv, cache_k, cache_v, cu_q, cu_k, 40, 96,
                                           causal=True, block_table=table)
    ref = flashtile.flash_attn_varlen_func(qv, torch.cat([k[0, :40], k[0]]),
                                           torch.cat([v[0, :40], v[0]]), cu_q, cu_k, 40, 96,
                                           causal=True)
    del keys, lens
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_compile_fullgraph_and_opcheck():
    from flashtile import autograd
    q, k, v = (x.requires_grad_() for x in _inputs(2, 37, 53, 4, 2, 32, seed=8))
    fn = torch.compile(lambda q, k, v: flashtile.flash_attn_func(q, k, v, causal=True,
                                                                 softcap=5.0),
                       fullgraph=True)
    out = fn(q, k, v)
    torch.testing.assert_close(out, flashtile.flash_attn_func(q, k, v, causal=True,
                                                              softcap=5.0), atol=0, rtol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    args = (q, k, v, None, None, 37, 53, 0.2, -1, 0, 0.0, None, 0.0, None, False, "tf32",
            False)
    torch.library.opcheck(autograd.attention_forward, args)
    seed = torch.tensor([5], dtype=torch.int64)
    torch.library.opcheck(autograd.attention_forward,
                          (q, k, v, None, None, 37, 53, 0.2, 3, 2, 0.0, None, 0.3, seed, True,
                           "tf32", False))


# ============================================================== ATen's CPU kernel
# Plain options without returned probabilities go to ATen's CPU flash kernel
# (flashtile.aten_cpu); the grid above asks for probabilities, so it runs the
# chunked path. These cases run both, including the bottom-right causal corners
# the ATen bridge splits (Sq > Sk: empty top rows; Sq < Sk: two merged parts).

ATEN_SHAPES = [(1, 1), (1, 147), (113, 203), (203, 113), (128, 128)]


@pytest.mark.parametrize("path", ["aten", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [6, 2])
@pytest.mark.parametrize("shape", ATEN_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_plain_options_both_paths(shape, kv_heads, causal, dtype, path, monkeypatch):
    from flashtile import aten_cpu
    monkeypatch.setattr(aten_cpu, "ENABLED", path == "aten")
    calls = []
    real = aten_cpu.forward
    monkeypatch.setattr(aten_cpu, "forward", lambda *a: calls.append(1) or real(*a))
    sq, sk = shape
    q, k, v = _inputs(2, sq, sk, 6, kv_heads, 59, seed=sq * 7 + sk)
    run = lambda q, k, v: (flashtile.flash_attn_func(q, k, v, causal=causal), None)  # noqa: E731
    check_case(run, q, k, v, dtype=dtype, causal=causal)
    assert bool(calls) == (path == "aten")


def test_aten_path_matches_chunked_path(monkeypatch):
    """Same outputs, LSE and gradients from both paths (float32, causal, GQA, Sq < Sk)."""
    from flashtile import aten_cpu, torch_path
    q, k, v = (x.requires_grad_() for x in _inputs(2, 97, 211, 6, 2, 48, seed=21))
    dout = torch.randn(2, 97, 6, 48)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(aten_cpu, "ENABLED", enabled)
        out = flashtile.flash_attn_func(q, k, v, causal=True)
        _, lse, _ = torch_path.attention_forward(
            q.detach(), k.detach(), v.detach(), cu_seqlens_q=None, cu_seqlens_k=None,
            max_seqlen_q=97, max_seqlen_k=211, softmax_scale=48 ** -0.5, window_left=-1,
            window_right=0, softcap=0.0, alibi_slopes=None, dropout_p=0.0, seed=None,
            return_probs=False)
        results.append((out, lse, *torch.autograd.grad(out, (q, k, v), dout)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_aten_path_fp8_matches_dequantised_chunked_path(monkeypatch):
    from flashtile import aten_cpu
    q, k, v = _inputs(2, 67, 131, 6, 2, 64, seed=4)
    q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
    descales = [torch.rand(2, 2) + 0.5 for _ in range(3)]
    outs = []
    for enabled in (True, False):
        monkeypatch.setattr(aten_cpu, "ENABLED", enabled)
        outs.append(flashtile.flash_attn_func(q8, k8, v8, causal=True, q_descale=descales[0],
                                              k_descale=descales[1], v_descale=descales[2]))
    assert outs[0].dtype == torch.bfloat16
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-2)


@pytest.mark.parametrize("options", [dict(dropout_p=0.2, causal=True),
                                     dict(dropout_p=0.1, window_size=(50, 20), softcap=4.0)],
                         ids=str)
def test_several_query_blocks_skipped_chunks_and_dropout(options):
    """Tiles on a grid of query blocks x key chunks, some outside the mask: the backward
    must see the masks the forward drew, tile by tile."""
    from flashtile import torch_path
    q, k, v = _inputs(2, 600, 350, 6, 2, 32, seed=31)
    block, chunk = torch_path.tiling(2 * 6, 600, 350)
    assert 600 // block >= 3 and 350 // chunk >= 2
    check_case(_dense(**options), q, k, v, dtype=torch.float32, **options)
