"""A small forward + backward with odd shapes for compute-sanitizer (memcheck, racecheck).

    compute-sanitizer --tool memcheck python3 benchmarks/sanitize_case.py
"""

import torch

import flashtile


def main():
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    for options in (dict(causal=True), dict(window_size=(17, 5), softcap=10.0),
                    dict(dropout_p=0.2, alibi_slopes=torch.rand(6, device=dev))):
        q = torch.randn(2, 77, 6, 59, device=dev, dtype=dt, requires_grad=True)
        k = torch.randn(2, 93, 2, 59, device=dev, dtype=dt, requires_grad=True)
        v = torch.randn(2, 93, 2, 59, device=dev, dtype=dt, requires_grad=True)
        out = flashtile.flash_attn_func(q, k, v, **options)
        out.backward(torch.randn_like(out))
    cu = torch.tensor([0, 13, 13, 70], dtype=torch.int32, device=dev)
    x = torch.randn(70, 4, 40, device=dev, dtype=dt, requires_grad=True)
    out = flashtile.flash_attn_varlen_func(x, x, x, cu, cu, 57, 57, causal=True)
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    print("sanitize case done")


if __name__ == "__main__":
    main()
