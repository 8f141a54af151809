"""GPU tests of the FP8 (e4m3) forward kernel. Skipped without CUDA (tests/conftest.py).

The Triton interpreter casts fp32 -> fp8 wrongly, so the kernel's FP8 path can only
be checked here. Accuracy rule, in the spirit of FlashAttention's 2x rule: against
float64 attention on the *dequantised* inputs, our error must be at most 2x that of
plain PyTorch doing what any FP8 P.V product must do (P rounded to e4m3, fp32
everywhere else), plus bf16 output rounding.
"""

import pytest
import torch

import flashtile
from flashtile.reference import attention_ref

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("triton_backend")]
E4M3 = torch.float8_e4m3fn


def _quantised(batch, sq, sk, heads, kv_heads, d, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    q8, k8, v8 = (rand(batch, s, h, d).to(E4M3)
                  for s, h in ((sq, heads), (sk, kv_heads), (sk, kv_heads)))
    descales = [torch.rand(batch, kv_heads, device="cuda", generator=gen) + 0.5
                for _ in range(3)]
    return q8, k8, v8, descales


def _dequantised(q8, k8, v8, descales):
    group = q8.shape[2] // k8.shape[2]
    qd, kd, vd = (d.double()[:, None, :, None] for d in descales)
    return (q8.double() * qd.repeat_interleave(group, 2), k8.double() * kd, v8.double() * vd)


def _p_fp8_baseline(q, k, v, causal, window):
    """fp32 attention with P rounded to e4m3 before P.V (row max taken first)."""
    group = q.shape[2] // k.shape[2]
    qt, kt, vt = (x.float().transpose(1, 2) for x in (q, k, v))
    kt, vt = kt.repeat_interleave(group, 1), vt.repeat_interleave(group, 1)
    s = qt @ kt.transpose(-1, -2) * q.shape[-1] ** -0.5
    sq, sk = s.shape[-2:]
    i = torch.arange(sq, device=s.device)[:, None] + sk - sq
    j = torch.arange(sk, device=s.device)[None, :]
    left, right = window if window != (-1, -1) else (sk + sq, sk + sq)
    if causal:
        right = 0
    s = s.masked_fill((j < i - left) | (j > i + right), float("-inf"))
    m = s.amax(-1, keepdim=True).clamp_min(-1e30)
    p = torch.exp(s - m)
    out = (p.to(E4M3).float() @ vt) / p.sum(-1, keepdim=True)
    return out.transpose(1, 2)


def _check_against_reference(batch, sq, sk, heads, kv_heads, d, causal, window, seed):
    q8, k8, v8, descales = _quantised(batch, sq, sk, heads, kv_heads, d, seed=seed)
    out = flashtile.flash_attn_func(
        q8, k8, v8, causal=causal, window_size=window, q_descale=descales[0],
        k_descale=descales[1], v_descale=descales[2])
    assert out.dtype == torch.bfloat16 and out.shape == q8.shape
    qf, kf, vf = _dequantised(q8, k8, v8, descales)
    ref = attention_ref(qf, kf, vf, causal=causal, window_size=window)[0]
    base = _p_fp8_baseline(qf, kf, vf, causal, window)
    err = (out.double() - ref).abs().max().item()
    base_err = (base.double() - ref).abs().max().item()
    bf16_round = 2 ** -8 * ref.abs().max().item()
    assert err <= 2 * base_err + bf16_round, (err, base_err)


@pytest.mark.parametrize("d", [59, 64, 128, 256])
@pytest.mark.parametrize("sq,sk", [(113, 203), (256, 512), (1023, 1024)])
@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)),
                                           (False, (64, 17))])
def test_fp8_forward_accuracy(d, sq, sk, causal, window):
    _check_against_reference(2, sq, sk, 6, 2, d, causal, window, seed=sq + d)


@pytest.mark.parametrize("d", [96, 128, 256])
@pytest.mark.parametrize("sq,sk", [(3000, 4000), (4000, 4001)])
@pytest.mark.parametrize("causal", [False, True])
def test_fp8_forward_large(d, sq, sk, causal):
    """Sizes past descriptors_pay's threshold: the TMA path (V^T through a (B, Hk, D, S)
    descriptor; S_k = 4001 exercises the zero-padded last 16 keys of the permuted V^T).
    The pointer path is covered by the smaller shapes above."""
    _check_against_reference(1, sq, sk, 4, 2, d, causal, (-1, -1), seed=sk + d)


def test_fp8_varlen_and_gqa():
    lens = [37, 200, 1, 129]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], device="cuda",
                      dtype=torch.int32)
    total = sum(lens)
    q8, k8, v8, descales = _quantised(1, total, total, 8, 2, 128, seed=3)
    q8, k8, v8 = q8[0], k8[0], v8[0]
    descales = [d.expand(len(lens), 2).contiguous() for d in descales]
    out = flashtile.flash_attn_varlen_func(
        q8, k8, v8, cu, cu, max(lens), max(lens), causal=True, q_descale=descales[0],
        k_descale=descales[1], v_descale=descales[2])
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one = [x[None, a:b] for x in (q8, k8, v8)]
        per = [d[i:i + 1] for d in descales]
        qf, kf, vf = _dequantised(*one, per)
        ref = attention_ref(qf, kf, vf, causal=True)[0][0]
        base = _p_fp8_baseline(qf, kf, vf, True, (-1, -1))[0]
        err = (out[a:b].double() - ref).abs().max().item()
        base_err = (base.double() - ref).abs().max().item()
        assert err <= 2 * base_err + 2 ** -8 * ref.abs().max().item(), (i, err, base_err)


@pytest.mark.parametrize("permute_keys", [True, False])
@pytest.mark.parametrize("shape", [(2, 1037, 3, 59), (1, 4099, 2, 128), (3, 203, 2, 256)])
def test_transpose_kernel_on_gpu(shape, permute_keys):
    """V's one-pass transpose kernel stores byte for byte what torch's views give, on the
    GPU (odd lengths: the zero padding; strided rows)."""
    from flashtile.kernels.layout import transposed_v
    from flashtile.reference import transposed_v_ref
    batch, seqlen, heads, dim = shape
    gen = torch.Generator(device="cuda").manual_seed(seqlen)
    v = torch.randn(batch, seqlen, heads, dim + 3, device="cuda", generator=gen).to(E4M3)
    v = v[..., :dim]
    _, vt, _ = transposed_v(v, permute_keys)
    assert torch.equal(vt.view(torch.uint8), transposed_v_ref(v, permute_keys).view(torch.uint8))
