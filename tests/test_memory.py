"""The PyTorch path never materialises the Sq x Sk score matrix.

Runs forward + backward at N = 32768, d = 64, one head, in a fresh process and
reads its peak resident memory. The full float32 score matrix alone would be
4 GiB (standard attention also keeps P: 8 GiB); the limit below is a quarter of
one matrix, interpreter and torch included.
"""

import subprocess
import sys

SCRIPT = r"""
import resource, torch, flashtile
with flashtile.use_backend("torch"):
    n = 32768
    q, k, v = (torch.randn(1, n, 1, 64, requires_grad=True) for _ in range(3))
    out = flashtile.flash_attn_func(q, k, v, causal=True)
    out.backward(torch.randn_like(out))
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
try:  # this process's own peak: ru_maxrss also carries the parent's peak across a
    # vfork + exec (Linux), i.e. whatever the pytest worker held before
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak * 1024)
"""


def test_forward_backward_32k_peak_memory():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=600, check=True)
    peak = int(result.stdout.strip().splitlines()[-1])
    score_matrix = 32768 * 32768 * 4
    print(f"peak RSS {peak / 2**20:.0f} MiB vs {score_matrix / 2**20:.0f} MiB for one "
          f"float32 score matrix")
    assert peak < score_matrix / 4
