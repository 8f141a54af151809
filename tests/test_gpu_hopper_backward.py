"""GPU tests of the Gluon backward for Hopper (flashtile/kernels/backward_hopper.py, and
backward_hopper_d256.py at head dim 256).

Skipped without CUDA (tests/conftest.py) and off sm_90. Every case checks that the
Gluon backward actually ran (a counter on its launcher), then applies the 3x rule
against float64 to dQ, dK and dV (and the 2x rule to the forward's output).
"""

import pytest
import torch

import flashtile
from accuracy import check_case, check_items
from flashtile.kernels import backward, backward_hopper, forward, forward_hopper

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("triton_backend")]


@pytest.fixture
def launches(monkeypatch, count_calls):
    """Number of Gluon backward launches so far; skips the test off Hopper."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon backward is sm_90 only")
    count = count_calls(backward_hopper, "attention_backward")
    monkeypatch.setattr(backward, "USE_HOPPER_KERNEL", True)  # whatever the defaults
    monkeypatch.setattr(backward_hopper, "MIN_FLOPS", 0.0)  # small shapes take it too
    monkeypatch.setattr(backward_hopper, "MIN_FLOPS_D256", 0.0)
    monkeypatch.setattr(forward_hopper, "MIN_FLOPS", 0.0)
    return count


def _inputs(batch, sq, sk, heads, kv_heads, d, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda s, h: torch.randn(batch, s, h, d, device="cuda", generator=gen)  # noqa: E731
    return make(sq, heads), make(sk, kv_heads), make(sk, kv_heads)


SHAPES = [(1, 1), (113, 203), (203, 113), (128, 128), (1023, 1024), (1024, 1023), (2000, 3001),
          (64, 1000), (1000, 64)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gluon_backward_matches_reference(launches, shape, causal, d, dtype):
    heads, kv_heads = [(6, 6), (6, 2), (4, 1)][SHAPES.index(shape) % 3]
    q, k, v = _inputs(2, *shape, heads, kv_heads, d, seed=shape[0] + shape[1] + d)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c, causal=causal), None),
               q, k, v, dtype=dtype, causal=causal)
    assert launches[0] == 1


@pytest.mark.parametrize("d", [128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_gluon_backward_long_gqa(launches, causal, d):
    """Many query tiles per CTA over four heads of a GQA group (the rings wrap around)."""
    q, k, v = _inputs(1, 2048, 2048, 8, 2, d, seed=7)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c, causal=causal), None),
               q, k, v, dtype=torch.bfloat16, causal=causal)
    assert launches[0] == 1


@pytest.mark.parametrize("d", [128, 256])
def test_gluon_backward_packed_qkv(launches, d):
    """q, k, v as strided views of one packed (B, S, 3, H, D) tensor."""
    qkv = torch.randn(2, 300, 3, 4, d, device="cuda")
    q, k, v = qkv.unbind(2)
    check_case(lambda a, b, c: (flashtile.flash_attn_func(a, b, c, causal=True), None),
               q, k, v, dtype=torch.bfloat16, causal=True)
    assert launches[0] == 1


@pytest.mark.parametrize("d", [128, 256])
def test_rows_without_keys_get_zero_gradients(launches, d):
    """Causal with Sq > Sk (bottom-right aligned): the first Sq - Sk rows see no key,
    so their dQ is exactly 0, and nothing is NaN."""
    q, k, v = (x.to(torch.bfloat16).requires_grad_() for x in _inputs(1, 300, 100, 2, 2, d, 1))
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    out.backward(torch.randn_like(out))
    assert launches[0] == 1
    assert (q.grad[:, :200] == 0).all()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("d", [128, 256])
def test_gluon_backward_matches_triton_kernels(launches, monkeypatch, d):
    q, k, v = (x.to(torch.float16) for x in _inputs(2, 777, 901, 4, 2, d, seed=2))
    dout = torch.randn_like(q)

    def grads():
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        out = flashtile.flash_attn_func(*leaves, causal=True, softmax_scale=0.1)
        return torch.autograd.grad(out, leaves, dout)

    ours = grads()
    assert launches[0] == 1
    monkeypatch.setattr(backward, "USE_HOPPER_KERNEL", False)
    theirs = grads()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("options", [dict(window_size=(64, 17)), dict(softcap=10.0),
                                     dict(deterministic=True), dict(dropout_p=0.1)], ids=str)
def test_other_options_take_the_triton_kernels(launches, options):
    q, k, v = (x.to(torch.bfloat16).requires_grad_()
               for x in _inputs(1, 256, 256, 2, 2, 128, seed=3))
    out = flashtile.flash_attn_func(q, k, v, **options)
    out.backward(torch.ones_like(out))
    assert launches[0] == 0


@pytest.mark.parametrize("d", [59, 96])
def test_other_head_dims_take_the_triton_kernels(launches, d):
    q, k, v = (x.to(torch.bfloat16).requires_grad_()
               for x in _inputs(1, 256, 256, 2, 2, d, seed=3))
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    out.backward(torch.ones_like(out))
    assert launches[0] == 0


@pytest.mark.bigmem
@pytest.mark.parametrize("gluon", [True, False], ids=["gluon", "triton"])
def test_batch_heads_past_the_grid_limit(launches, monkeypatch, gluon):
    """4100 x 16 = 65600 (batch, head) programs: more than CUDA's 65535 on one grid axis
    (config.batch_head_grid continues on axis 2), forward and backward, both kernels."""
    if not gluon:
        monkeypatch.setattr(forward, "USE_HOPPER_KERNEL", False)
        monkeypatch.setattr(backward, "USE_HOPPER_KERNEL", False)
    q, k, v = _inputs(4100, 64, 64, 16, 16, 128, seed=9)
    # items on grid axis 2's first and last rows (a full float64 check of all 4100 takes
    # ~55 GB and ran out of memory next to other tests under pytest-xdist)
    check_items(lambda a, b, c: flashtile.flash_attn_func(a, b, c, causal=True),
                q, k, v, torch.tensor([0, 1, 2047, 2048, 4098, 4099]), dtype=torch.bfloat16,
                causal=True)
    assert launches[0] == (1 if gluon else 0)
