"""FlashAttention's accuracy rule, shared by the test files.

Our error against the float64 reference must be at most `factor` times the
error of a plain PyTorch implementation run in the same low precision
(2x for outputs, 3x for gradients), plus a rounding-level tolerance so that
exact-in-fp32 cases do not fail on a last-bit difference.
"""

from __future__ import annotations

import torch


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def rounding_atol(ref: torch.Tensor, head_dim: int) -> float:
    """float32 rounding of a length-`head_dim` dot product of O(1) values.

    Kernels accumulate in float32 whatever the input dtype, so this is negligible
    next to a bf16/fp16 baseline's error; it keeps exactly-zero references (dq
    when each row sees a single key: dP - rowsum(dO * O) cancels) from demanding
    bit-exact cancellation.
    """
    if ref.numel() == 0:
        return 0.0
    return torch.finfo(torch.float32).eps * head_dim * max(ref.abs().max().item(), 1.0)


def assert_close_rule(ours, ref, baseline, head_dim: int, factor: float, name: str) -> None:
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    err, base = max_err(ours, ref), max_err(baseline, ref)
    bound = factor * base + rounding_atol(ref, head_dim)
    assert err <= bound, f"{name}: error {err:.3e} > {factor} x baseline {base:.3e} (+atol)"


def check_case(run, q, k, v, *, dtype, grads=True, dropout_p=0.0, **ref_options):
    """Run `run(q, k, v) -> (out, probs or None)` and check it against the reference.

    q, k, v are float32 masters; the case runs in `dtype`. When dropout is on,
    the keep-mask is recovered from the sign of the returned probabilities
    (flash_attn's S_dmask convention) and handed to the reference, so this also
    checks that the backward pass regenerated the forward's mask.
    Returns the output and the keep-mask for further checks.
    """
    from flashtile.reference import attention_ref

    low = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    out, probs = run(*low)
    keep = None
    if dropout_p > 0:
        keep = ~torch.signbit(probs)
    options = dict(ref_options, dropout_p=dropout_p, dropout_mask=keep)
    hi = [x.detach().double().requires_grad_() for x in low]
    base_in = [x.detach().clone().requires_grad_() for x in low]
    ref, _ = attention_ref(*hi, **options)
    base, _ = attention_ref(*base_in, upcast=False, **options)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close_rule(out, ref, base, q.shape[-1], 2.0, "out")
    if grads:
        dout = torch.randn_like(out)
        ours = torch.autograd.grad(out, low, dout)
        refs = torch.autograd.grad(ref, hi, dout.double())
        bases = torch.autograd.grad(base, base_in, dout)
        for name, a, r, b in zip(("dq", "dk", "dv"), ours, refs, bases):
            assert_close_rule(a, r, b, q.shape[-1], 3.0, name)
    return out, keep


def check_items(run, q, k, v, items, *, dtype, **ref_options):
    """`check_case` for huge batches: run `run(q, k, v) -> out` on all of q, k, v (float32
    masters, run in `dtype`), then hold the output and the gradients of the batch items
    `items` to the 2x / 3x rule (items are independent, so a few suffice)."""
    from flashtile.reference import attention_ref

    low = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    out = run(*low)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, low, dout)
    sub = [x.detach()[items] for x in low]
    hi = [x.double().requires_grad_() for x in sub]
    base_in = [x.clone().requires_grad_() for x in sub]
    ref, _ = attention_ref(*hi, **ref_options)
    base, _ = attention_ref(*base_in, upcast=False, **ref_options)
    assert_close_rule(out[items], ref, base, q.shape[-1], 2.0, "out")
    refs = torch.autograd.grad(ref, hi, dout[items].double())
    bases = torch.autograd.grad(base, base_in, dout[items])
    for name, g, r, b in zip(("dq", "dk", "dv"), grads, refs, bases):
        assert_close_rule(g[items], r, b, q.shape[-1], 3.0, name)
