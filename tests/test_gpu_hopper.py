"""GPU tests of the Gluon forward for Hopper (flashtile/kernels/forward_hopper.py).

Skipped without CUDA (tests/conftest.py); on a GPU other than sm_90 the dispatch
tests are skipped too. Every case checks that the Gluon kernel actually ran (a
counter on its launcher), then applies the 2x / 3x rule against float64 to the
output and to the gradients (the backward consumes the Gluon kernel's LSE).
"""

import pytest
import torch

import flashtile
from accuracy import check_case
from flashtile.kernels import forward, forward_hopper

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("triton_backend")]


@pytest.fixture
def launches(monkeypatch, count_calls):
    """Number of Gluon launches so far; skips the test off Hopper."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon forward is sm_90 only")
    count = count_calls(forward_hopper, "attention_forward")
    monkeypatch.setattr(forward, "USE_HOPPER_KERNEL", True)  # whatever the defaults
    monkeypatch.setattr(forward_hopper, "ENABLED", set(forward_hopper.CONFIGS))
    monkeypatch.setattr(forward_hopper, "MIN_FLOPS", 0.0)  # small shapes take it too
    return count


def _inputs(batch, sq, sk, heads, kv_heads, d, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda s, h: torch.randn(batch, s, h, d, device="cuda", generator=gen)  # noqa: E731
    return make(sq, heads), make(sk, kv_heads), make(sk, kv_heads)


def _forward(q, k, v, softmax_scale):
    """(out, lse) of a causal dense call through the kernels' entry point."""
    out, lse, _ = forward.attention_forward(
        q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=q.shape[1],
        max_seqlen_k=k.shape[1], softmax_scale=softmax_scale, window_left=-1, window_right=0,
        softcap=0.0, alibi_slopes=None, dropout_p=0.0, seed=None, return_probs=False)
    return out, lse


SHAPES = [(1, 1), (113, 203), (203, 113), (128, 128), (1023, 1024), (1024, 1023), (2000, 3001)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gluon_forward_matches_reference(launches, shape, causal, d, dtype):
    heads, kv_heads = [(6, 6), (6, 2), (4, 1)][SHAPES.index(shape) % 3]
    q, k, v = _inputs(2, *shape, heads, kv_heads, d, seed=shape[0] + d)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c, causal=causal), None),
               q, k, v, dtype=dtype, causal=causal)
    assert launches[0] == 1


def test_gluon_forward_large_gqa(launches):
    """Many key tiles per program (the TMA ring wraps around several times)."""
    q, k, v = _inputs(1, 4096, 4096, 8, 2, 128, seed=7)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c, causal=True), None),
               q, k, v, dtype=torch.bfloat16, grads=False, causal=True)
    assert launches[0] == 1


def test_gluon_forward_packed_qkv(launches):
    """q, k, v as strided views of one packed (B, S, 3, H, D) tensor."""
    qkv = torch.randn(2, 300, 3, 4, 64, device="cuda")
    q, k, v = qkv.unbind(2)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c), None),
               q, k, v, dtype=torch.bfloat16, grads=False)
    assert launches[0] == 1


def test_rows_without_keys_give_zero_and_minus_inf(launches):
    """Causal with Sq > Sk (bottom-right aligned): the first Sq - Sk rows see no key."""
    q, k, v = (x.to(torch.bfloat16) for x in _inputs(1, 300, 100, 2, 2, 64, seed=1))
    out, lse = _forward(q, k, v, 0.125)
    assert launches[0] == 1
    assert (out[:, :200] == 0).all() and torch.isneginf(lse[:, :, :200]).all()
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :, 200:]).all()


def test_gluon_lse_matches_triton_kernel(launches, monkeypatch):
    q, k, v = (x.to(torch.float16) for x in _inputs(2, 777, 901, 4, 2, 128, seed=2))
    _, lse_gluon = _forward(q, k, v, 0.1)
    assert launches[0] == 1
    monkeypatch.setattr(forward, "USE_HOPPER_KERNEL", False)
    _, lse_triton = _forward(q, k, v, 0.1)
    torch.testing.assert_close(lse_gluon, lse_triton, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("options", [dict(window_size=(64, 17)), dict(softcap=10.0),
                                     dict(dropout_p=0.1)], ids=str)
def test_other_options_take_the_triton_kernel(launches, options):
    q, k, v = (x.to(torch.bfloat16) for x in _inputs(1, 256, 256, 2, 2, 64, seed=3))
    flashtile.flash_attn_func(q, k, v, **options)
    assert launches[0] == 0


def test_gluon_fp8_forward(launches):
    """The FP8 rows (d256 on in the default dispatch, d64 / d128 off; V^T through a (B, Hk,
    D, S) descriptor), against float64 on the dequantised inputs: within 2x plain FP8-P
    attention's error."""
    from test_gpu_fp8 import _check_against_reference
    _check_against_reference(2, 1000, 1203, 6, 2, 128, True, (-1, -1), seed=5)
    _check_against_reference(1, 113, 203, 4, 4, 64, False, (-1, -1), seed=6)
    _check_against_reference(1, 777, 901, 4, 2, 256, True, (-1, -1), seed=7)
    _check_against_reference(2, 300, 555, 4, 1, 256, False, (-1, -1), seed=8)
    assert launches[0] == 4


def test_odd_head_dim_takes_the_triton_kernel(launches):
    q, k, v = (x.to(torch.bfloat16) for x in _inputs(1, 256, 256, 2, 2, 59, seed=3))
    flashtile.flash_attn_func(q, k, v, causal=True)
    assert launches[0] == 0
