"""GPU suite: the Triton kernels through the public API on a CUDA device.

Skipped without CUDA (tests/conftest.py). Run on a Hopper GPU with
``make test-gpu`` or ``python -m pytest -m gpu tests``. The grid follows
flash_attn's own tests (ANCHORS §4): odd shapes, head dims 32..256, causal,
sliding window, ALiBi, softcap, dropout 0.17, MQA/GQA, varlen with random
lengths, in bf16 and fp16, outputs and all three gradients under the 2x / 3x
rule against float64.
"""

import pytest
import torch

import flashtile
from accuracy import check_case

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("triton_backend")]

SHAPES = [(113, 203), (128, 217), (108, 256), (256, 512), (512, 256), (1023, 1024), (1024, 1023)]
HEAD_DIMS = [32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256]
OPTION_MIXES = [
    dict(),
    dict(causal=True),
    dict(window_size=(64, 17)),
    dict(softcap=30.0, causal=True),
    dict(alibi=True),
    dict(dropout_p=0.17),
    dict(causal=True, alibi=True, dropout_p=0.17),
    dict(window_size=(-1, 40), softcap=10.0),
]


def _inputs(batch, sq, sk, heads, kv_heads, d, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda s, h: torch.randn(batch, s, h, d, device="cuda", generator=gen)
    return make(sq, heads), make(sk, kv_heads), make(sk, kv_heads)


def _dense(**options):
    def run(q, k, v):
        out, _, probs = flashtile.flash_attn_func(q, k, v, return_attn_probs=True, **options)
        return out, probs
    return run


def _run_mix(mix, q, k, v, dtype, heads):
    mix = dict(mix)
    if mix.pop("alibi", False):
        mix["alibi_slopes"] = torch.rand(q.shape[0], heads, device="cuda") * 0.3
    out, keep = check_case(_dense(**mix), q, k, v, dtype=dtype, **mix)
    assert not torch.isnan(out).any()
    return keep


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid(shape, d, dtype):
    i = SHAPES.index(shape) + HEAD_DIMS.index(d) + (dtype == torch.float16)
    heads, kv_heads = [(6, 6), (6, 2), (6, 1)][i % 3]
    q, k, v = _inputs(2, *shape, heads, kv_heads, d, seed=i)
    _run_mix(OPTION_MIXES[i % len(OPTION_MIXES)], q, k, v, dtype, heads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mix", OPTION_MIXES, ids=str)
@pytest.mark.parametrize("kv_heads", [6, 2, 1])
def test_options(mix, kv_heads, dtype):
    q, k, v = _inputs(2, 113, 203, 6, kv_heads, 59, seed=kv_heads)
    _run_mix(mix, q, k, v, dtype, 6)


@pytest.mark.parametrize("precision", ["tf32", "ieee"])
def test_float32(precision):
    flashtile.set_fp32_precision(precision)
    try:
        q, k, v = _inputs(2, 113, 203, 6, 2, 64, seed=1)
        if precision == "ieee":
            check_case(_dense(causal=True), q, k, v, dtype=torch.float32, causal=True)
        else:
            _tf32_close(q, k, v)
    finally:
        flashtile.set_fp32_precision(None)


def _tf32_close(q, k, v):
    from flashtile.reference import attention_ref
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    ref, _ = attention_ref(q, k, v, causal=True)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 2e-3, rel  # TF32 dots: ~1e-3 relative


@pytest.mark.parametrize("seqlen,d,causal", [(8192, 128, True), (4096, 64, False),
                                             (2048, 256, True)])
def test_long(seqlen, d, causal):
    q, k, v = _inputs(1, seqlen, seqlen, 2, 1, d, seed=seqlen)
    check_case(_dense(causal=causal), q, k, v, dtype=torch.bfloat16, causal=causal)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mix", [dict(), dict(causal=True), dict(window_size=(33, 7)),
                                 dict(dropout_p=0.17, softcap=20.0)], ids=str)
def test_varlen_random_lengths(mix, dtype):
    gen = torch.Generator().manual_seed(17)
    B, S, H, Hk, d = 6, 300, 6, 2, 96
    lens_q = torch.randint(0, S + 1, (B,), generator=gen).tolist()
    lens_k = torch.randint(1, S + 1, (B,), generator=gen).tolist()
    lens_q[0] = 0
    q, k, v = _inputs(B, S, S, H, Hk, d, seed=3)
    cu = lambda n: torch.tensor([0] + n, device="cuda").cumsum(0).to(torch.int32)
    unpad = lambda x, n: torch.cat([x[b, :m] for b, m in enumerate(n)])

    def pad(x, n):
        out = x.new_zeros(B, S, *x.shape[1:])
        starts = [0] + torch.tensor(n).cumsum(0).tolist()
        for b, m in enumerate(n):
            out[b, :m] = x[starts[b]: starts[b] + m]
        return out

    def run(q, k, v):
        out, _, probs = flashtile.flash_attn_varlen_func(
            unpad(q, lens_q), unpad(k, lens_k), unpad(v, lens_k), cu(lens_q), cu(lens_k),
            S, S, return_attn_probs=True, **mix)
        return pad(out, lens_q), probs

    masks = [torch.arange(S, device="cuda")[None] < torch.tensor(n, device="cuda")[:, None]
             for n in (lens_q, lens_k)]
    check_case(run, q, k, v, dtype=dtype, query_padding_mask=masks[0],
               key_padding_mask=masks[1], **mix)


def test_dropout_rate_and_seed():
    q, k, v = _inputs(2, 1024, 1024, 8, 8, 64, seed=4)
    q, k, v = (x.bfloat16() for x in (q, k, v))
    torch.manual_seed(0)
    out1, _, probs = flashtile.flash_attn_func(q, k, v, dropout_p=0.17, return_attn_probs=True)
    assert abs(torch.signbit(probs).float().mean().item() - 0.17) < 0.01
    torch.manual_seed(0)
    assert torch.equal(out1, flashtile.flash_attn_func(q, k, v, dropout_p=0.17))


@pytest.mark.parametrize("kv_heads", [8, 2])
def test_deterministic_backward_20_runs(kv_heads):
    q, k, v = _inputs(2, 1000, 1100, 8, kv_heads, 128, seed=5)
    q, k, v = (x.bfloat16().requires_grad_() for x in (q, k, v))
    dout = torch.randn_like(q)
    first = None
    for _ in range(20):
        out = flashtile.flash_attn_func(q, k, v, causal=True, deterministic=True)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        if first is None:
            first = grads
        assert all(torch.equal(a, b) for a, b in zip(first, grads))


def test_fully_masked_rows_no_nan():
    q, k, v = _inputs(2, 300, 100, 4, 4, 64, seed=6)
    q, k, v = (x.bfloat16().requires_grad_() for x in (q, k, v))
    out, lse, _ = flashtile.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.equal(out[:, :200], torch.zeros_like(out[:, :200]))
    assert torch.isinf(lse[:, :, :200]).all() and (lse[:, :, :200] < 0).all()
    grads = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert all(torch.isfinite(g).all() for g in grads)


def test_compile_fullgraph_and_opcheck():
    q, k, v = _inputs(2, 128, 160, 4, 2, 64, seed=8)
    q, k, v = (x.bfloat16().requires_grad_() for x in (q, k, v))
    fn = torch.compile(lambda q, k, v: flashtile.flash_attn_func(q, k, v, causal=True),
                       fullgraph=True)
    torch.testing.assert_close(fn(q, k, v), flashtile.flash_attn_func(q, k, v, causal=True),
                               atol=0, rtol=0)
    fn(q, k, v).sum().backward()
    from flashtile import autograd
    args = (q, k, v, None, None, 128, 160, 0.125, -1, 0, 0.0, None, 0.0, None, False,
            "tf32", False)
    torch.library.opcheck(autograd.attention_forward, args)


def _check_strided_q(q, seqlen_k):
    """Causal attention of a strided bf16 q (filled in place) against fresh (1, seqlen_k,
    1, D) k and v: output and all three gradients against float64 (2x / 3x rule)."""
    from accuracy import assert_close_rule
    from flashtile.reference import attention_ref

    d = q.shape[-1]
    q.requires_grad_()
    k, v = (torch.randn(1, seqlen_k, 1, d, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True) for _ in range(2))
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    dout = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), dout)
    hi = [x.detach().double().requires_grad_() for x in (q, k, v)]
    low = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    ref, base = attention_ref(*hi, causal=True)[0], attention_ref(*low, causal=True,
                                                                   upcast=False)[0]
    assert_close_rule(out, ref, base, d, 2.0, "out")
    refs = torch.autograd.grad(ref, hi, dout.double())
    bases = torch.autograd.grad(base, low, dout)
    for name, a, r, b in zip(("dq", "dk", "dv"), ours, refs, bases):
        assert_close_rule(a, r, b, d, 3.0, name)


@pytest.mark.parametrize("d", [64, 256])
def test_row_offsets_beyond_int32(d):
    """Row index x row stride > 2^31 elements (e.g. packed qkv at 175k+ tokens): the
    pointer paths must use 64-bit offsets. q's rows sit 2^21 elements apart in a
    4.6 GB buffer; output and all three gradients against float64 (2x / 3x rule)."""
    seqlen, stride = 1100, 1 << 21
    store = torch.zeros((seqlen - 1) * stride + d, device="cuda", dtype=torch.bfloat16)
    q = store.as_strided((1, seqlen, 1, d), (0, stride, d, 1))
    q.copy_(torch.randn(1, seqlen, 1, d, device="cuda"))
    _check_strided_q(q, 300)


@pytest.mark.parametrize("d", [64, 256])
def test_head_offsets_beyond_int32(d):
    """Head index x head stride > 2^31 elements (views of (B, H, S, D) tensors with
    H * S * D > 2^31): q's second head starts 2^31 + 256 elements into a 4.3 GB buffer
    (GQA 2:1), so the kernels' base offsets must be 64-bit. Output and gradients
    against float64 (2x / 3x rule). (Passed on the H200 in session 5.)"""
    seqlen, head_stride = 300, (1 << 31) + 256
    store = torch.zeros(head_stride + seqlen * d, device="cuda", dtype=torch.bfloat16)
    q = store.as_strided((1, seqlen, 2, d), (0, d, head_stride, 1))
    q.copy_(torch.randn(1, seqlen, 2, d, device="cuda"))
    _check_strided_q(q, 257)


@pytest.mark.parametrize("entry", ["prefill_gluon", "prefill_triton", "decode"])
def test_cuda_graph_replay_matches_eager(entry):
    """Captured once, replayed on new inputs written into the same buffers: the replay
    equals an eager call bit for bit (launch-cache hits and misses both run inside the
    capture: the first call per key goes through Triton, later ones straight to the
    launcher)."""
    gen = torch.Generator(device="cuda").manual_seed(11)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=gen,  # noqa: E731
                                 dtype=torch.bfloat16)
    if entry == "decode":
        q, k, v = rnd(2, 1, 16, 128), rnd(2, 3000, 4, 128), rnd(2, 3000, 4, 128)
        lens = torch.tensor([2999, 1777], device="cuda", dtype=torch.int32)
        call = lambda: flashtile.flash_attn_with_kvcache(  # noqa: E731
            q, k, v, cache_seqlens=lens, causal=True)
    else:  # 16 x 1k x 16 x d128 takes the Gluon forward on sm_90; 2 x 1k the Triton one
        batch = 16 if entry == "prefill_gluon" else 2
        q, k, v = (rnd(batch, 1024, 16, 128) for _ in range(3))
        call = lambda: flashtile.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compile) off the capture, as torch advises
        call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    for x in (q, k, v):
        x.copy_(torch.randn(x.shape, device="cuda", generator=gen))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, call())


@pytest.mark.parametrize("d,causal", [(64, False), (128, True), (256, False)])
def test_repeat_tma_launches_match_tritons_own_launcher(d, causal, monkeypatch):
    """Past TMA_MIN_FLOPS the launches pass TMA descriptors (the Gluon kernels; the
    Triton forward's d64 row). From the second call on, `BoundLaunch` launches them
    with tensor maps encoded once (`launcher._tensor_map`) instead of through Triton's
    launcher: same inputs, same results as with that switched off (forward, dK, dV bit
    for bit; dQ within rounding, the Gluon backward reduce-adds it)."""
    from flashtile.kernels import launcher
    encoded = []
    real = launcher._tensor_map
    monkeypatch.setattr(launcher, "_tensor_map",
                        lambda desc, encoding: encoded.append(1) or real(desc, encoding))
    shape = (8, 1024, 2048 // d, d)  # 3.4e10 flops causal: past TMA_MIN_FLOPS

    def call(seed):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        q, k, v, do = (torch.randn(shape, device="cuda", generator=gen, dtype=torch.bfloat16)
                       for _ in range(4))
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        out = flashtile.flash_attn_func(q, k, v, causal=causal)
        return (out, *torch.autograd.grad(out, (q, k, v), do))

    call(0)  # first launches: through Triton
    for seed in (1, 2):
        direct = call(seed)
        monkeypatch.setattr(launcher, "USE_TENSOR_MAPS", False)
        tritons = call(seed)
        monkeypatch.setattr(launcher, "USE_TENSOR_MAPS", True)
        for name, a, b in zip(("out", "dq", "dk", "dv"), direct, tritons):
            if name == "dq":
                torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
            else:
                assert torch.equal(a, b), name
    assert encoded  # (the direct launch ran)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("size", ["small_triton", "large_gluon"])
def test_tensors_on_another_gpu_than_the_current_one(size, monkeypatch):
    """A model split over GPUs in one process: inputs on cuda:1 while cuda:0 is current.
    Every launch of a forward, backward and decode step happens with cuda:1 current
    (kernels.launcher.on_tensors_device), and the results equal the same calls made
    with cuda:1 current (dQ within rounding: the Gluon backward reduce-adds it)."""
    from flashtile.kernels import launcher

    assert torch.cuda.current_device() == 0
    devices = []
    current = launcher.driver.active.get_current_device
    monkeypatch.setattr(launcher.driver.active, "get_current_device",
                        lambda: devices.append(current()) or devices[-1])
    gen = torch.Generator(device="cuda:1").manual_seed(5)
    batch = 16 if size == "large_gluon" else 2
    q, k, v, do = (torch.randn(batch, 1024, 16, 128, device="cuda:1", generator=gen,
                               dtype=torch.bfloat16) for _ in range(4))

    def run():
        qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
        out = flashtile.flash_attn_func(qg, kg, vg, causal=True)
        dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), do)
        lens = torch.tensor([1000] * batch, device="cuda:1", dtype=torch.int32)
        step = flashtile.flash_attn_with_kvcache(q[:, :1], k, v, cache_seqlens=lens)
        return out, dk, dv, step, dq

    other = run()
    assert devices and set(devices) == {1}, devices
    with torch.cuda.device(1):
        same = run()
    for a, b in zip(other[:4], same[:4]):
        assert a.device == torch.device("cuda:1") and torch.equal(a, b)
    torch.testing.assert_close(other[4], same[4], atol=1e-2, rtol=1e-2)
