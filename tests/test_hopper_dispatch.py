"""CPU checks of the Gluon kernels' dispatch rules (the kernels themselves:
test_gpu_hopper.py, test_gpu_hopper_backward.py)."""

import pytest
import torch

from flashtile.kernels import (backward_hopper, backward_hopper_d256, forward_hopper,
                               hopper_common)


def _supports(q, k, v, **over):
    options = dict(softmax_scale=0.1, window_left=-1, window_right=0, softcap=0.0,
                   alibi_slopes=None, dropout_p=0.0)
    options.update(over)
    return forward_hopper.supports(q, k, v, **options)


def test_cpu_tensors_never_take_the_gluon_kernel():
    q = torch.randn(1, 256, 2, 128, dtype=torch.bfloat16)
    assert not _supports(q, q, q)


def test_enabled_rows_have_configs():
    assert forward_hopper.ENABLED <= set(forward_hopper.CONFIGS)
    for (dtype_class, head_dim), row in forward_hopper.CONFIGS.items():
        block_n, k_stages, v_stages, consumer_regs, loader_regs = row
        assert dtype_class in ("16bit", "fp8") and head_dim in (64, 128, 256)
        # setmaxnreg: multiples of 8 within 24..256; two consumer warpgroups + the loader
        # warpgroup must fit the SM's 64k registers
        assert consumer_regs % 8 == 0 and loader_regs % 8 == 0
        assert 2 * 128 * consumer_regs + 128 * loader_regs <= 65536
        assert block_n in (64, 128) and k_stages >= 2 and v_stages >= 2
        assert forward_hopper.shared_bytes(dtype_class, head_dim, row) \
            <= forward_hopper.SHARED_BYTES - 1024  # the mbarriers and alignment


def test_shared_bytes_counts_every_buffer():
    """d128 bf16 with 3 + 3 slots of 128 keys: Q (and O) 32 KB, K and V 3 x 32 KB each."""
    assert forward_hopper.shared_bytes("16bit", 128, (128, 3, 3, 240, 24)) == 229376
    # FP8 d256: Q 32 KB, bf16 O staging 64 KB, 2 + 3 slots of 64 keys (16 KB each)
    assert forward_hopper.shared_bytes("fp8", 256, (64, 2, 3, 240, 24)) == 180224
    # its shipped row: 2 + 2 slots of 128 keys (32 KB each)
    assert forward_hopper.shared_bytes("fp8", 256, (128, 2, 2, 240, 24)) == 229376


def test_small_launches_stay_on_the_triton_kernel(monkeypatch):
    """The size rule alone: a CUDA-looking call below MIN_FLOPS is refused."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(hopper_common, "interpreter_active", lambda: False)
    monkeypatch.setattr(hopper_common, "descriptor_ok", lambda *t: True)
    small = torch.empty(1, 256, 2, 128, dtype=torch.bfloat16)
    big = torch.empty(1, 8192, 16, 128, dtype=torch.bfloat16)
    assert not _supports(small, small, small)
    assert _supports(big, big, big)


def _bwd_supports(q, **over):
    options = dict(softmax_scale=0.1, window_left=-1, window_right=0, softcap=0.0,
                   alibi_slopes=None, dropout_p=0.0, deterministic=False)
    options.update(over)
    return backward_hopper.supports(q, q, q, q, **options)


@pytest.fixture
def fake_hopper(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(hopper_common, "interpreter_active", lambda: False)
    monkeypatch.setattr(hopper_common, "descriptor_ok", lambda *t: True)


def test_backward_dispatch_rules(fake_hopper):
    big = torch.empty(1, 8192, 16, 128, dtype=torch.bfloat16)
    assert _bwd_supports(big) and _bwd_supports(big, window_right=-1)
    assert not _bwd_supports(torch.empty(1, 256, 2, 128, dtype=torch.bfloat16))  # host-bound
    assert not _bwd_supports(big.to(torch.float32))
    assert _bwd_supports(torch.empty(1, 8192, 32, 64, dtype=torch.bfloat16))
    assert _bwd_supports(torch.empty(1, 8192, 8, 256, dtype=torch.bfloat16))
    assert _bwd_supports(torch.empty(16, 1024, 8, 256, dtype=torch.bfloat16))  # 6.9e10
    assert _bwd_supports(torch.empty(16, 1024, 8, 128, dtype=torch.bfloat16))  # 3.4e10
    assert not _bwd_supports(torch.empty(4, 1024, 8, 128, dtype=torch.bfloat16))  # 8.6e9
    assert not _bwd_supports(torch.empty(1, 8192, 8, 96, dtype=torch.bfloat16))
    for over in (dict(deterministic=True), dict(window_left=100), dict(softcap=5.0),
                 dict(dropout_p=0.1), dict(alibi_slopes=torch.ones(16))):
        assert not _bwd_supports(big, **over), over


def test_backward_cpu_tensors_never_take_the_gluon_kernel():
    q = torch.randn(1, 8192, 16, 128, dtype=torch.bfloat16)
    assert not _bwd_supports(q)


def test_backward_configs_fit_the_register_file():
    for head_dim, (stages, consumer_regs, loader_regs) in backward_hopper.CONFIGS.items():
        assert head_dim in (64, 128) and stages >= 2
        assert consumer_regs % 8 == 0 and loader_regs % 8 == 0
        assert 2 * 128 * consumer_regs + 128 * loader_regs <= 65536
    q_stages, do_stages, consumer_regs, loader_regs = backward_hopper_d256.CONFIG
    assert q_stages >= 2 and do_stages >= 1 and consumer_regs % 8 == 0
    assert 2 * 128 * consumer_regs + 128 * loader_regs <= 65536
