"""The Triton kernels (flashtile.kernels) against the float64 reference.

Without a GPU the kernels run in Triton's interpreter, which must be switched on
before triton is imported (tests/conftest.py does it too; this module does not
rely on that). The launchers are called directly, with FlashAttention's accuracy
rule: max |ours - ref| <= factor * max |baseline - ref| + atol, where ref is
`attention_ref` in float64 and baseline is the same reference run in the inputs'
own dtype (factor 2 for outputs, 3 for gradients). In the interpreter fp16 and
fp32 are tested (bf16 tl.dot is not emulated there).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import flashtile.kernels as kernels  # noqa: E402
from flashtile.reference import attention_probs_ref, attention_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter's scalar handling trips a NumPy deprecation warning on every loop bound.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array:DeprecationWarning")


def _ensure_interpreted():
    """If something imported the kernels before TRITON_INTERPRET was set, re-create
    them so they run in the interpreter (only needed without a GPU)."""
    if DEVICE == "cuda":
        return
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(kernels.forward._fwd_kernel, InterpretedFunction):
        for name in ("common", "config", "forward", "backward"):
            importlib.reload(importlib.import_module(f"flashtile.kernels.{name}"))
        importlib.reload(kernels)


_ensure_interpreted()


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_rule(ours, ref, base, factor, atol, name):
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    err, berr = _err(ours, ref), _err(base, ref)
    assert err <= factor * berr + atol, f"{name}: err {err:.3e} > {factor} x {berr:.3e} + {atol}"


def assert_lse(ours, ref, base, name="lse"):
    """Same -inf pattern as the reference, finite entries by the 2x rule."""
    assert not torch.isnan(ours).any(), f"{name}: NaN"
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(ours), inf), f"{name}: -inf rows differ"
    assert (ours[inf] < 0).all()
    assert_rule(ours[~inf], ref[~inf], base[~inf], 2, 1e-4, name)


def _atol(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-4


def run_fwd(q, k, v, *, causal=False, window=(-1, -1), softcap=0.0, alibi=None, dropout_p=0.0,
            seed=None, return_probs=False, precision="tf32", cu_q=None, cu_k=None,
            max_q=None, max_k=None, attn_mask=None):
    wl, wr = window
    if causal:
        wr = 0
    dense = cu_q is None
    return kernels.attention_forward(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
        max_seqlen_q=q.shape[1] if dense else max_q, max_seqlen_k=k.shape[1] if dense else max_k,
        softmax_scale=q.shape[-1] ** -0.5, window_left=wl, window_right=wr, softcap=softcap,
        alibi_slopes=alibi, dropout_p=dropout_p, seed=seed, return_probs=return_probs,
        fp32_precision=precision, attn_mask=attn_mask)


def run_bwd(dout, q, k, v, out, lse, *, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
            dropout_p=0.0, seed=None, precision="tf32", cu_q=None, cu_k=None, max_q=None,
            max_k=None, attn_mask=None):
    wl, wr = window
    if causal:
        wr = 0
    dense = cu_q is None
    return kernels.attention_backward(
        dout, q, k, v, out, lse, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
        max_seqlen_q=q.shape[1] if dense else max_q, max_seqlen_k=k.shape[1] if dense else max_k,
        softmax_scale=q.shape[-1] ** -0.5, window_left=wl, window_right=wr, softcap=softcap,
        alibi_slopes=alibi, dropout_p=dropout_p, seed=seed, deterministic=True,
        fp32_precision=precision, attn_mask=attn_mask)


def ref_and_baseline(q, k, v, dout, precision="tf32", **opts):
    """(out, lse, grads) of attention_ref in float64 and of the low-precision baseline.

    The baseline runs in the inputs' dtype, except for fp32 inputs with tf32 dots on
    a GPU: tf32 keeps fp16's 10-bit mantissa, so those are held to an fp16 baseline
    (in the interpreter tf32 dots are exact fp32 and keep the fp32 baseline).
    """
    tf32 = DEVICE == "cuda" and q.dtype == torch.float32 and precision == "tf32"
    results = []
    for upcast in (True, False):
        dtype = torch.float16 if tf32 and not upcast else q.dtype
        leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out, lse = attention_ref(*leaves, upcast=upcast, **opts)
        grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
        results.append((out.detach(), lse.detach(), [g.nan_to_num(0.0) for g in grads]))
    return results


def check_all(q, k, v, dout, out, lse, grads, precision="tf32", **opts):
    (r_out, r_lse, r_grads), (b_out, b_lse, b_grads) = ref_and_baseline(
        q, k, v, dout, precision, **opts)
    atol = _atol(q.dtype)
    # Hopper's tf32 tensor cores truncate the fp32 inputs where the fp16 baseline
    # rounds them: twice the unit error, so twice the factor (GPU + tf32 only).
    slack = 2 if DEVICE == "cuda" and q.dtype == torch.float32 and precision == "tf32" else 1
    assert_rule(out, r_out, b_out, 2 * slack, atol, "out")
    assert_lse(lse, r_lse, b_lse.double())
    for name, g, rg, bg in zip(("dq", "dk", "dv"), grads, r_grads, b_grads):
        assert_rule(g, rg, bg, 3 * slack, atol, name)


def make_qkv(B, Sq, Sk, H, Hk, D, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Sq, H, D, generator=gen, dtype=torch.float32)
    k = torch.randn(B, Sk, Hk, D, generator=gen, dtype=torch.float32)
    v = torch.randn(B, Sk, Hk, D, generator=gen, dtype=torch.float32)
    dout = torch.randn(B, Sq, H, D, generator=gen, dtype=torch.float32)
    return [t.to(DEVICE, dtype) for t in (q, k, v, dout)]


def _seed(value):
    return torch.tensor([value], dtype=torch.int64, device=DEVICE)


def end_to_end(q, k, v, dout, precision="tf32", **opts):
    out, lse, _ = run_fwd(q, k, v, precision=precision, **opts)
    grads = run_bwd(dout, q, k, v, out, lse, precision=precision, **opts)
    return out, lse, grads


def _ref_opts(causal=False, window=(-1, -1), softcap=0.0, alibi=None):
    return dict(causal=causal, window_size=window, softcap=softcap, alibi_slopes=alibi)


# ----------------------------------------------------------------------------
# dense: shapes x head dims x masks
# ----------------------------------------------------------------------------

SHAPES = [(1, 1), (1, 37), (37, 53), (64, 29)]
MASKS = {
    "full": dict(),
    "causal": dict(causal=True),
    "win5_3": dict(window=(5, 3)),
    "win7_0": dict(window=(7, 0)),
}


@pytest.mark.parametrize("mask", list(MASKS), ids=list(MASKS))
@pytest.mark.parametrize("D", [16, 59], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"sq{s[0]}_sk{s[1]}")
def test_dense_fp16(shape, D, mask):
    q, k, v, dout = make_qkv(2, shape[0], shape[1], 2, 2, D, torch.float16)
    opts = MASKS[mask]
    out, lse, grads = end_to_end(q, k, v, dout, **opts)
    check_all(q, k, v, dout, out, lse, grads, **_ref_opts(**opts))


@pytest.mark.skipif(DEVICE == "cpu", reason="bf16 tl.dot is not emulated by the interpreter")
@pytest.mark.parametrize("mask", ["full", "causal", "win5_3"])
def test_dense_bf16_gpu(mask):
    q, k, v, dout = make_qkv(2, 64, 29, 4, 2, 59, torch.bfloat16)
    opts = MASKS[mask]
    out, lse, grads = end_to_end(q, k, v, dout, **opts)
    check_all(q, k, v, dout, out, lse, grads, **_ref_opts(**opts))


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
@pytest.mark.parametrize("mask", ["causal", "win5_3"])
@pytest.mark.parametrize("shape", [(1, 37), (37, 53), (64, 29)],
                         ids=lambda s: f"sq{s[0]}_sk{s[1]}")
def test_dense_fp32(shape, mask, precision):
    q, k, v, dout = make_qkv(1, shape[0], shape[1], 2, 1, 59, torch.float32)
    opts = MASKS[mask]
    out, lse, grads = end_to_end(q, k, v, dout, precision=precision, **opts)
    check_all(q, k, v, dout, out, lse, grads, precision=precision, **_ref_opts(**opts))


# ----------------------------------------------------------------------------
# softcap, ALiBi, GQA
# ----------------------------------------------------------------------------

FEATURES = {
    "softcap": dict(softcap=5.0),
    "softcap_causal": dict(softcap=5.0, causal=True),
    "alibi": dict(alibi=True),
    "alibi_win7_0": dict(alibi=True, window=(7, 0)),
    "alibi_batch_stride0": dict(alibi="shared"),
    "softcap_alibi_win5_3": dict(softcap=5.0, alibi=True, window=(5, 3)),
    "gqa6_2_causal": dict(heads=(6, 2), causal=True),
    "gqa6_1_win5_3": dict(heads=(6, 1), window=(5, 3)),
    "gqa6_2_softcap_alibi": dict(heads=(6, 2), softcap=5.0, alibi=True),
}


@pytest.mark.parametrize("shape", [(37, 53), (64, 29)], ids=lambda s: f"sq{s[0]}_sk{s[1]}")
@pytest.mark.parametrize("feature", list(FEATURES), ids=list(FEATURES))
def test_features(feature, shape):
    opts = dict(FEATURES[feature])
    H, Hk = opts.pop("heads", (2, 2))
    B = 2
    q, k, v, dout = make_qkv(B, shape[0], shape[1], H, Hk, 59, torch.float16, seed=1)
    alibi = opts.pop("alibi", None)
    if alibi == "shared":
        opts["alibi"] = (torch.rand(H, device=DEVICE) * 0.5).expand(B, H)  # batch stride 0
    elif alibi:
        opts["alibi"] = torch.rand(B, H, device=DEVICE) * 0.5
    out, lse, grads = end_to_end(q, k, v, dout, **opts)
    ref_opts = _ref_opts(**opts)
    if ref_opts["alibi_slopes"] is not None:
        ref_opts["alibi_slopes"] = ref_opts["alibi_slopes"].contiguous()
    check_all(q, k, v, dout, out, lse, grads, **ref_opts)


# ----------------------------------------------------------------------------
# varlen, non-contiguous inputs, fully masked rows
# ----------------------------------------------------------------------------

def _pack(x, mask):
    return x[mask].contiguous()  # (B, S, H, D) -> (T, H, D)


VARLEN = {
    "fp16_full": dict(dtype=torch.float16),
    "fp16_causal_gqa6_2": dict(dtype=torch.float16, causal=True, heads=(6, 2)),
    "fp16_win5_3_alibi_softcap": dict(dtype=torch.float16, window=(5, 3), alibi=True,
                                      softcap=5.0),
    "fp32_causal_ieee": dict(dtype=torch.float32, causal=True, precision="ieee"),
}


@pytest.mark.parametrize("case", list(VARLEN), ids=list(VARLEN))
def test_varlen(case):
    opts = dict(VARLEN[case])
    dtype = opts.pop("dtype")
    precision = opts.pop("precision", "tf32")
    H, Hk = opts.pop("heads", (2, 2))
    lens_q = torch.tensor([13, 0, 29, 7, 20])  # a zero-length query item...
    lens_k = torch.tensor([21, 5, 0, 40, 3])  # ...and a zero-length key item
    B, Mq, Mk = len(lens_q), int(lens_q.max()), int(lens_k.max())
    q, k, v, dout = make_qkv(B, Mq, Mk, H, Hk, 59, dtype, seed=2)
    qmask = (torch.arange(Mq)[None] < lens_q[:, None]).to(DEVICE)  # (B, Mq) True = token
    kmask = (torch.arange(Mk)[None] < lens_k[:, None]).to(DEVICE)
    if opts.pop("alibi", False):
        opts["alibi"] = torch.rand(B, H, device=DEVICE) * 0.5
    cu_q = torch.nn.functional.pad(lens_q.cumsum(0), (1, 0)).to(DEVICE, torch.int32)
    cu_k = torch.nn.functional.pad(lens_k.cumsum(0), (1, 0)).to(DEVICE, torch.int32)
    vl = dict(cu_q=cu_q, cu_k=cu_k, max_q=Mq, max_k=Mk)
    qp, kp, vp, dop = (_pack(q, qmask), _pack(k, kmask), _pack(v, kmask), _pack(dout, qmask))
    out, lse, _ = run_fwd(qp, kp, vp, precision=precision, **vl, **opts)
    grads = run_bwd(dop, qp, kp, vp, out, lse, precision=precision, **vl, **opts)
    assert out.shape == qp.shape and lse.shape == (H, qp.shape[0])

    ref_opts = dict(_ref_opts(**opts), query_padding_mask=qmask, key_padding_mask=kmask)
    (r_out, r_lse, r_g), (b_out, b_lse, b_g) = ref_and_baseline(q, k, v, dout, precision,
                                                                **ref_opts)
    atol = _atol(dtype)
    assert_rule(out, _pack(r_out, qmask), _pack(b_out, qmask), 2, atol, "out")
    lse_t = lambda x: x.permute(0, 2, 1)[qmask].T  # (B, H, Mq) -> (H, Tq)  # noqa: E731
    assert_lse(lse, lse_t(r_lse), lse_t(b_lse).double())
    for name, g, rg, bg, m in zip(("dq", "dk", "dv"), grads, r_g, b_g, (qmask, kmask, kmask)):
        assert_rule(g, _pack(rg, m), _pack(bg, m), 3, atol, name)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_non_contiguous(causal):
    """Strided views: q, k, v out of one packed qkv buffer, dout a sequence slice."""
    B, S, H, D = 2, 37, 2, 59
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(B, S + 4, 3, H, D, generator=gen).to(DEVICE, torch.float16)
    q, k, v = qkv[:, 2:2 + S, 0], qkv[:, 1:1 + S, 1], qkv[:, 3:3 + S, 2]
    dout_big = torch.randn(B, S + 6, H, 2 * D, generator=gen).to(DEVICE, torch.float16)
    dout = dout_big[:, 3:3 + S, :, D:]
    assert not (q.is_contiguous() or k.is_contiguous() or dout.is_contiguous())
    out, lse, grads = end_to_end(q, k, v, dout, causal=causal)
    check_all(q, k, v, dout, out, lse, grads, causal=causal)


def test_launch_plans_are_reused_and_keyed_on_strides_and_options():
    """Repeat calls reuse the memoised launch plans (forward.py's `_PLANS`, backward.py's
    `_BACKWARD_PLANS`) on new values; new strides or options get their own plans; every
    result meets the rule."""
    from flashtile.kernels import backward, forward, launcher
    launcher.clear_plans()
    B, S, H, D = 2, 37, 2, 59
    for seed in (5, 6):  # same shapes: one plan each
        q, k, v, dout = make_qkv(B, S, S, H, H, D, torch.float16, seed=seed)
        out, lse, grads = end_to_end(q, k, v, dout, causal=True)
        check_all(q, k, v, dout, out, lse, grads, causal=True)
    assert len(forward._PLANS) == len(backward._BACKWARD_PLANS) == 1
    wide = make_qkv(B, S, S, 2 * H, 2 * H, D, torch.float16, seed=7)  # strided views
    q, k, v, dout = (x[:, :, :H] for x in wide)
    out, lse, grads = end_to_end(q, k, v, dout, causal=True)
    check_all(q, k, v, dout, out, lse, grads, causal=True)
    out, lse, grads = end_to_end(q, k, v, dout, window=(5, 3))
    check_all(q, k, v, dout, out, lse, grads, window_size=(5, 3))
    assert len(forward._PLANS) == len(backward._BACKWARD_PLANS) == 3


def test_int64_row_offsets(monkeypatch):
    """The 64-bit row-offset loads and stores (taken on a GPU only when row x stride
    reaches 2^31) compute the same attention and gradients."""
    from flashtile.kernels import backward, common, forward, launcher
    monkeypatch.setattr(forward, "pointer_mode", lambda *a: common.LOAD_PTR64.value)
    monkeypatch.setattr(backward, "pointer_mode", lambda *a: common.LOAD_PTR64.value)
    launcher.clear_plans()  # (plans hold the pointer mode they were built with)
    q, k, v, dout = make_qkv(2, 37, 45, 2, 1, 59, torch.float16)  # odd D: pointer loads
    out, lse, grads = end_to_end(q, k, v, dout, causal=True)
    check_all(q, k, v, dout, out, lse, grads, causal=True)
    assert common.pointer_mode(2**16, torch.empty(2, 4, 3, 8)) == common.LOAD_PTR.value
    assert common.pointer_mode(2**28, torch.empty(1, 1, 2, 8)) == common.LOAD_PTR64.value


def test_batch_heads_past_the_grid_limit(monkeypatch):
    """Past CUDA's 65535 programs on grid axis 1, batch * heads continues on axis 2
    (config.batch_head_grid); a limit of 5 makes a tiny launch take that path."""
    from flashtile.kernels import config, launcher
    monkeypatch.setattr(config, "MAX_GRID_YZ", 5)
    launcher.clear_plans()  # (plans hold their grids)
    assert config.batch_head_grid(3, 4) == (4, 3) and config.batch_head_grid(4, 2) == (4, 2)
    q, k, v, dout = make_qkv(3, 37, 45, 4, 2, 16, torch.float16)
    out, lse, grads = end_to_end(q, k, v, dout, causal=True)
    check_all(q, k, v, dout, out, lse, grads, causal=True)


@pytest.mark.parametrize("zero_dq", [False, True])
def test_hopper_row_stats(zero_dq):
    """The Gluon backward's row statistics come from the Triton preprocess kernel (runs
    here): LSE in log2 units (+inf where -inf), Delta, rows past S zero up to the tile;
    given the fp32 dQ buffer, the same launch zeroes all of it."""
    import math

    from flashtile.kernels import backward, backward_hopper
    gen = torch.Generator().manual_seed(3)
    out, dout = (torch.randn(2, 70, 3, 16, generator=gen).to(DEVICE, torch.float16)
                 for _ in range(2))
    lse = torch.randn(2, 3, 70, generator=gen).to(DEVICE)
    lse[0, 1, :5] = float("-inf")
    dq_acc = backward_hopper.dq_buffer(out).fill_(float("nan"))
    stats = backward.hopper_row_stats(out, dout, lse, dq_acc if zero_dq else None)
    assert (dq_acc == 0).all() if zero_dq else dq_acc.isnan().all()
    assert stats.shape == (2, 3, 2, 2 * backward_hopper.BLOCK_M)
    lse2 = torch.where(torch.isneginf(lse), float("inf"), lse / math.log(2.0))
    delta = (out.float() * dout.float()).sum(-1).transpose(1, 2)
    torch.testing.assert_close(stats[:, :, 0, :70], lse2)
    torch.testing.assert_close(stats[:, :, 1, :70], delta, atol=1e-4, rtol=1e-4)
    assert (stats[:, :, :, 70:] == 0).all()


def test_batch_head_grid_covers_exactly():
    from flashtile.kernels.config import MAX_GRID_YZ, batch_head_grid
    assert batch_head_grid(2, 16) == (32, 1)
    for batch, heads in [(4096, 32), (4099, 32), (65535, 2), (70000, 1), (9, 65535)]:
        y, z = batch_head_grid(batch, heads)
        assert y * z == batch * heads and y <= MAX_GRID_YZ and z <= MAX_GRID_YZ
        assert y % heads == 0  # consecutive heads of one item stay on axis 1
    with pytest.raises(ValueError, match="launch grid"):
        batch_head_grid(2**40, 3)


def test_int64_rows_never_mix_with_descriptors(monkeypatch):
    """Descriptor launches store dQ/dK/dV through 32-bit pointer rows, so a 64-bit span
    must keep the whole backward on pointers (a dQ store overflowed on an H200 at
    Sq * H * D > 2^31 when the dQ kernel took descriptors)."""
    from flashtile.kernels import backward, common

    def no_descriptors(*a, **k):
        raise AssertionError("descriptor built for a 64-bit span")
    monkeypatch.setattr(backward, "pointer_mode", lambda *a: common.LOAD_PTR64.value)
    monkeypatch.setattr(backward, "make_descriptor", no_descriptors)
    q, k, v, dout = make_qkv(1, 40, 40, 2, 2, 64, torch.float16)  # descriptor-eligible
    out, lse, grads = end_to_end(q, k, v, dout, causal=True)
    check_all(q, k, v, dout, out, lse, grads, causal=True)


@pytest.mark.parametrize("window,shape", [
    ((0, 0), (37, 10)),  # Sq > Sk: the first 27 rows see no key at all
    ((-1, 0), (64, 29)),  # causal, Sq > Sk
    ((3, -1), (20, 40)),  # left window only: nothing excludes a whole row...
    ((2, 1), (45, 3)),  # ...but here most rows are empty
], ids=["win0_0", "causal_sq_gt_sk", "win3_inf", "win2_1_tiny_k"])
def test_fully_masked_rows(window, shape):
    q, k, v, dout = make_qkv(1, shape[0], shape[1], 2, 1, 16, torch.float16, seed=4)
    out, lse, grads = end_to_end(q, k, v, dout, window=window)
    for t in (out, lse, *grads):
        assert not torch.isnan(t).any()
    _, r_lse = attention_ref(q, k, v, window_size=window)
    empty = torch.isinf(r_lse)  # (B, H, Sq)
    assert torch.equal(torch.isinf(lse), empty) and (lse[empty] < 0).all()
    assert (out.permute(0, 2, 1, 3)[empty] == 0).all()
    check_all(q, k, v, dout, out, lse, grads, window_size=window)


# ----------------------------------------------------------------------------
# return_attn_probs and dropout
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [dict(causal=True), dict(window=(5, 3), softcap=5.0)],
                         ids=["causal", "win5_3_softcap"])
def test_probs_without_dropout(opts):
    q, k, v, _ = make_qkv(2, 37, 53, 4, 2, 16, torch.float16, seed=5)
    out, lse, probs = run_fwd(q, k, v, return_probs=True, **opts)
    ref = attention_probs_ref(q, k, **_ref_opts(**opts))
    assert probs.shape == (2, 4, 37, 53) and probs.dtype == torch.float32
    assert (probs >= 0).all()
    assert _err(probs, ref) < 1e-4


DROPOUT = {
    "dense_gqa": dict(B=2, H=4, Hk=2, shape=(37, 53), dtype=torch.float16),
    "dense_causal_alibi": dict(B=2, H=2, Hk=2, shape=(64, 29), dtype=torch.float16,
                               causal=True, alibi=True),
    "dense_fp32_win": dict(B=1, H=2, Hk=1, shape=(37, 53), dtype=torch.float32,
                           window=(7, 0), precision="ieee"),
}


@pytest.mark.parametrize("case", list(DROPOUT), ids=list(DROPOUT))
def test_dropout_matches_reference(case):
    cfg = dict(DROPOUT[case])
    B, H, Hk, (Sq, Sk), dtype = cfg.pop("B"), cfg.pop("H"), cfg.pop("Hk"), cfg.pop("shape"), \
        cfg.pop("dtype")
    precision = cfg.pop("precision", "tf32")
    if cfg.pop("alibi", False):
        cfg["alibi"] = torch.rand(B, H, device=DEVICE) * 0.5
    p = 0.17
    q, k, v, dout = make_qkv(B, Sq, Sk, H, Hk, 16, dtype, seed=6)
    seed = _seed(1234)
    out, lse, probs = run_fwd(q, k, v, dropout_p=p, seed=seed, return_probs=True,
                              precision=precision, **cfg)
    grads = run_bwd(dout, q, k, v, out, lse, dropout_p=p, seed=seed, precision=precision, **cfg)
    # Recover the keep mask from the sign of probs (negative, -0.0 included = dropped).
    keep = ~torch.signbit(probs)
    ref_opts = _ref_opts(**cfg)
    assert _err(probs.abs(), attention_probs_ref(q, k, **ref_opts)) < 1e-4
    check_all(q, k, v, dout, out, lse, grads, precision=precision, dropout_p=p,
              dropout_mask=keep, **ref_opts)


def test_dropout_rate_and_seed():
    p = 0.3
    q, k, v, _ = make_qkv(1, 128, 128, 2, 2, 16, torch.float16, seed=7)
    out1, _, probs1 = run_fwd(q, k, v, dropout_p=p, seed=_seed(99), return_probs=True)
    out2, _, probs2 = run_fwd(q, k, v, dropout_p=p, seed=_seed(99), return_probs=True)
    out3, _, probs3 = run_fwd(q, k, v, dropout_p=p, seed=_seed(100), return_probs=True)
    dropped = torch.signbit(probs1).float().mean().item()  # every entry is visible here
    assert abs(dropped - p) < 0.02, dropped
    assert torch.equal(out1, out2) and torch.equal(probs1, probs2)
    assert not torch.equal(torch.signbit(probs1), torch.signbit(probs3))
    # different (batch, head) streams must not repeat the same mask
    assert not torch.equal(torch.signbit(probs1[0, 0]), torch.signbit(probs1[0, 1]))


def test_dropout_varlen_matches_reference():
    """Varlen dropout positions are local to each item: probs rows/cols are item-local."""
    lens_q, lens_k = torch.tensor([9, 0, 23]), torch.tensor([17, 4, 11])
    B, H, Hk, D, p = 3, 2, 1, 16, 0.2
    Mq, Mk = int(lens_q.max()), int(lens_k.max())
    q, k, v, dout = make_qkv(B, Mq, Mk, H, Hk, D, torch.float16, seed=8)
    qmask = (torch.arange(Mq)[None] < lens_q[:, None]).to(DEVICE)
    kmask = (torch.arange(Mk)[None] < lens_k[:, None]).to(DEVICE)
    cu_q = torch.nn.functional.pad(lens_q.cumsum(0), (1, 0)).to(DEVICE, torch.int32)
    cu_k = torch.nn.functional.pad(lens_k.cumsum(0), (1, 0)).to(DEVICE, torch.int32)
    vl = dict(cu_q=cu_q, cu_k=cu_k, max_q=Mq, max_k=Mk, causal=True, dropout_p=p,
              seed=_seed(7))
    qp, kp, vp, dop = (_pack(q, qmask), _pack(k, kmask), _pack(v, kmask), _pack(dout, qmask))
    out, lse, probs = run_fwd(qp, kp, vp, return_probs=True, **vl)
    grads = run_bwd(dop, qp, kp, vp, out, lse, **vl)
    keep = ~torch.signbit(probs)
    (r_out, _, r_g), (b_out, _, b_g) = ref_and_baseline(
        q, k, v, dout, causal=True, query_padding_mask=qmask, key_padding_mask=kmask,
        dropout_p=p, dropout_mask=keep)
    assert_rule(out, _pack(r_out, qmask), _pack(b_out, qmask), 2, 1e-4, "out")
    for name, g, rg, bg, m in zip(("dq", "dk", "dv"), grads, r_g, b_g, (qmask, kmask, kmask)):
        assert_rule(g, _pack(rg, m), _pack(bg, m), 3, 1e-4, name)


# ----------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dropout_p", [0.0, 0.1], ids=["no_dropout", "dropout"])
def test_backward_is_bitwise_deterministic(dropout_p):
    q, k, v, dout = make_qkv(2, 37, 53, 6, 2, 59, torch.float16, seed=9)
    opts = dict(causal=True, dropout_p=dropout_p, seed=_seed(5) if dropout_p else None)
    out, lse, _ = run_fwd(q, k, v, **opts)
    first = run_bwd(dout, q, k, v, out, lse, **opts)
    for _ in range(2):
        again = run_bwd(dout, q, k, v, out, lse, **opts)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------
# block skipping and the configuration table
# ----------------------------------------------------------------------------

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from flashtile.kernels import common, config  # noqa: E402


@triton.jit
def _band_probe(Args, Res, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    a_first = tl.load(Args + 5 * i)
    a_last = tl.load(Args + 5 * i + 1)
    len_b = tl.load(Args + 5 * i + 2)
    lo_shift = tl.load(Args + 5 * i + 3)
    hi_shift = tl.load(Args + 5 * i + 4)
    begin, full_lo, full_hi, end = common.band_bounds(a_first, a_last, len_b, lo_shift,
                                                      hi_shift, BLOCK)
    tl.store(Res + 4 * i, begin)
    tl.store(Res + 4 * i + 1, full_lo)
    tl.store(Res + 4 * i + 2, full_hi)
    tl.store(Res + 4 * i + 3, end)


def test_band_bounds_skip_and_cover():
    """Visited tiles cover every visible element, each intersects the band (so tiles
    outside it are skipped), and the unmasked tiles are visible for every pair."""
    BLOCK, cases = 16, []
    gen = torch.Generator().manual_seed(10)
    for _ in range(300):
        len_b = int(torch.randint(0, 90, (1,), generator=gen))
        a_first = int(torch.randint(0, 80, (1,), generator=gen))
        a_last = a_first + int(torch.randint(0, 20, (1,), generator=gen))
        lo_shift = int(torch.randint(-120, 80, (1,), generator=gen))
        hi_shift = lo_shift + int(torch.randint(0, 150, (1,), generator=gen))
        cases.append((a_first, a_last, len_b, lo_shift, hi_shift))
    args = torch.tensor(cases, dtype=torch.int32, device=DEVICE)
    res = torch.zeros(len(cases), 4, dtype=torch.int32, device=DEVICE)
    _band_probe[(len(cases),)](args, res, BLOCK=BLOCK)
    for (a_first, a_last, len_b, lo, hi), (begin, full_lo, full_hi, end) in zip(
            cases, res.tolist()):
        def visible(a, b):
            return 0 <= b < len_b and a + lo <= b <= a + hi
        band = {b for b in range(len_b) for a in range(a_first, a_last + 1) if visible(a, b)}
        masked = list(range(begin, full_lo, BLOCK)) + list(range(full_hi, end, BLOCK))
        full = list(range(full_lo, full_hi, BLOCK))
        tiles = sorted(masked + full)
        assert len(set(tiles)) == len(tiles) and all(t % BLOCK == 0 for t in tiles)
        covered = {b for t in tiles for b in range(t, t + BLOCK)}
        assert band <= covered
        assert all(band & set(range(t, t + BLOCK)) for t in tiles), "visited an empty tile"
        for t in full:
            assert all(visible(a, b) for a in range(a_first, a_last + 1)
                       for b in range(t, t + BLOCK))


def test_config_table():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for d in range(1, 257):
            block_d = config.padded_head_dim(d)
            assert block_d >= max(d, 16) and block_d & (block_d - 1) == 0
            for pass_name in ("fwd", "bwd_dkdv", "bwd_dq", "bwd_pre"):
                cfg = config._GPU_TABLE[(pass_name, config._dtype_class(dtype), block_d)]
                assert cfg.block_m >= 16 and cfg.num_warps in (1, 2, 4, 8)
                assert pass_name == "bwd_pre" or cfg.block_n >= 16
    with pytest.raises(ValueError):
        config.get_config("fwd", 257, torch.float16)


def test_short_causal_forwards_take_their_own_row(monkeypatch):
    """The GPU table's choice (the interpreter always has its own small config): d33-64
    16-bit causal forwards of <= SHORT_CAUSAL_MAX_ROWS queries use 64-row blocks; other
    head dims, dtypes and passes keep their row."""
    monkeypatch.setattr(config, "interpreter_active", lambda: False)
    short = lambda d, dtype=torch.bfloat16, name="fwd": config.get_config(  # noqa: E731
        name, d, dtype, short_causal=True)
    assert short(64).block_m == 64 and short(59, torch.float16).block_m == 64
    assert config.get_config("fwd", 64, torch.bfloat16).block_m == 128
    for d, dtype, name in ((128, torch.bfloat16, "fwd"), (64, torch.float32, "fwd"),
                           (64, torch.float8_e4m3fn, "fwd"), (64, torch.bfloat16, "bwd_dq")):
        assert short(d, dtype, name) == config.get_config(name, d, dtype)
    from flashtile.kernels import forward

    seen = []
    real = config.get_config
    monkeypatch.setattr(forward, "get_config", lambda *a, **kw: seen.append(kw) or real(*a))
    q = torch.randn(1, 40, 2, 64)
    for causal in (True, False):
        forward.attention_forward(
            q, q, q, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=40, max_seqlen_k=40,
            softmax_scale=0.125, window_left=-1, window_right=0 if causal else -1,
            softcap=0.0, alibi_slopes=None, dropout_p=0.0, seed=None, return_probs=False)
    assert seen == [dict(short_causal=True), dict(short_causal=False)]


def test_descriptors_only_where_they_pay(monkeypatch):
    """On a GPU, launches under ~0.1 ms of work skip the ~55 us of host descriptors;
    the interpreter always takes the descriptor path (that is what it tests)."""
    from flashtile.kernels.common import descriptors_pay
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not descriptors_pay(1, 2, 128, 128, 64, True)
    assert not descriptors_pay(4, 8, 512, 512, 64, True)  # 1.1e9 flops
    assert descriptors_pay(16, 16, 1024, 1024, 128, True)  # 6.9e10
    assert descriptors_pay(2, 16, 8192, 8192, 128, True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert descriptors_pay(1, 2, 128, 128, 64, True)


def test_descriptor_fields():
    """make_descriptor skips TensorDescriptor's validation: the fields must be exactly
    what the validated constructor would hold."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from flashtile.kernels.common import make_descriptor
    x = torch.empty(2, 48, 4, 64, dtype=torch.float16)[:, 8:]
    ours = make_descriptor(x, 32, 64)
    ref = TensorDescriptor(x, list(x.shape), list(x.stride()), [1, 32, 1, 64])
    assert type(ours) is TensorDescriptor and vars(ours) == vars(ref)
    assert make_descriptor(x[0], 16, 64).block_shape == [16, 1, 64]


def test_cdiv():
    assert [config.cdiv(a, 16) for a in (0, 1, 15, 16, 17, 33)] == [0, 1, 1, 1, 2, 3]


# ---------------------------------------------------------------- public switch


def test_public_api_routes_to_triton(monkeypatch):
    """FLASHTILE_BACKEND=triton sends CPU tensors through the kernels when the
    interpreter is on: the custom op's implementation must be flashtile.kernels."""
    import flashtile
    from accuracy import check_case
    from flashtile import backend, kernels

    monkeypatch.setenv("FLASHTILE_BACKEND", "triton")
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert backend.implementation(device) is kernels
    calls = []
    real = kernels.attention_forward
    monkeypatch.setattr(kernels, "attention_forward",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, h, 40, generator=gen).to(device)
               for n, h in ((37, 4), (53, 2), (53, 2)))

    def run(q, k, v):
        out, _, probs = flashtile.flash_attn_func(q, k, v, causal=True, softcap=5.0,
                                                  return_attn_probs=True)
        return out, probs

    check_case(run, q, k, v, dtype=torch.float16, causal=True, softcap=5.0)
    assert calls, "the Triton launcher was not called"


# ----------------------------------------------------------------------------
# attn_mask (kernel level; the public API does not take it yet)
# ----------------------------------------------------------------------------

def _random_mask(B, H, Sq, Sk, broadcast_heads, seed=1):
    """A random bool mask with a fully hidden query row and a fully hidden key tile
    (keys 16..47, so some kernels' tiles are skipped), broadcast over heads or not."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.rand(B, 1 if broadcast_heads else H, Sq, Sk, generator=gen) > 0.4
    m[0, :, 3] = False
    m[:, :, :, 16:48] = False
    return m.to(DEVICE).expand(B, H, Sq, Sk)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("causal,broadcast_heads", [(False, True), (True, False)])
def test_attn_mask_forward_backward(dtype, causal, broadcast_heads):
    B, Sq, Sk, H, Hk, D = 2, 45, 77, 4, 2, 40
    q, k, v, dout = make_qkv(B, Sq, Sk, H, Hk, D, dtype, seed=7)
    mask = _random_mask(B, H, Sq, Sk, broadcast_heads)
    out, lse, _ = run_fwd(q, k, v, causal=causal, attn_mask=mask)
    grads = run_bwd(dout, q, k, v, out, lse, causal=causal, attn_mask=mask)
    check_all(q, k, v, dout, out, lse, grads, causal=causal, attn_mask=mask)
    assert out[0, 3].abs().max().item() == 0.0  # the hidden row: 0, LSE -inf
    assert torch.isinf(lse[0, :, 3]).all()
    assert all(g.isfinite().all() for g in grads)
