"""Re-time the one outlier of the first suite run (d = 128, causal, 1k, bf16 forward) alone.

    python3 benchmarks/outlier_d128_causal_1k.py
"""

import torch
import triton

import flashtile
from flashtile.bench import attention_flops

B, S, H, D = 16, 1024, 16, 128
sets = [tuple(torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
              for _ in range(3)) for _ in range(3)]
flops = attention_flops(B, H, S, S, D, causal=True)
for grad in (False, True):
    for trial in range(3):
        i = iter(range(10**9))
        def run():
            q, k, v = sets[next(i) % 3]
            return flashtile.flash_attn_func(q, k, v, causal=True)
        with torch.set_grad_enabled(grad):
            ms = triton.testing.do_bench(run, return_mode="median")
        print(f"{torch.cuda.get_device_name()} d=128 causal S=1k fwd grad={grad} trial {trial}: "
              f"{ms:.3f} ms {flops / ms / 1e9:.0f} TFLOP/s")
