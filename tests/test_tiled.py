"""Tests for flashtile.tiled: exactness against attention_ref and HBM byte counts."""

import numpy as np
import pytest
import torch

from flashtile.reference import attention_ref
from flashtile.tiled import (
    HBM,
    SRAM,
    SRAMOverflowError,
    block_sizes,
    flash_attention_v1,
    flash_attention_v2,
    standard_attention,
)

ALGORITHMS = [standard_attention, flash_attention_v1, flash_attention_v2]
FP32 = 4
KIB = 1024


def qkv(nq, nk, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nq, d)), rng.standard_normal((nk, d)), rng.standard_normal((nk, d))


def reference(q, k, v, **kw):
    """attention_ref on one head: numpy (N, d) -> torch (1, N, 1, d) and back."""
    t = [torch.from_numpy(x)[None, :, None, :] for x in (q, k, v)]
    out, lse = attention_ref(*t, **kw)
    return out[0, :, 0].numpy(), lse[0, 0].numpy()


# ---------------------------------------------------------------- exactness

# 80 000 B of fp32 -> M = 20 000 elements: Bc = 79 / 85 / 157 for d = 64 / 59 / 32,
# Br = d. None of these divide the sequence lengths, so ragged tiles are exercised.
SRAM_BYTES = 80_000


@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("nq,nk", [(1, 1), (1, 147), (113, 203), (128, 217), (256, 512), (512, 256)])
@pytest.mark.parametrize("d", [32, 59, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(algo, nq, nk, d, causal):
    q, k, v = qkv(nq, nk, d, seed=nq * 1000 + nk + d)
    kw = {} if algo is standard_attention else {"sram_bytes": SRAM_BYTES}
    out, lse, io = algo(q, k, v, causal=causal, **kw)
    out_ref, lse_ref = reference(q, k, v, causal=causal)
    assert out.shape == (nq, d) and lse.shape == (nq,)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=1e-10)
    # assert_allclose also requires -inf (fully masked rows) in the same places.
    np.testing.assert_allclose(lse, lse_ref, rtol=0, atol=1e-10)
    if algo is not standard_attention:
        assert 0 < io.peak_sram_bytes <= SRAM_BYTES


def test_fully_masked_rows():
    # Causal with Nq > Nk: the first Nq - Nk queries see no key at all.
    q, k, v = qkv(512, 256, 32)
    for algo in ALGORITHMS:
        out, lse, _ = algo(q, k, v, causal=True)
        assert np.all(out[:256] == 0) and np.all(np.isneginf(lse[:256]))
        assert np.all(np.isfinite(lse[256:]))


@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda f: f.__name__)
def test_softmax_scale(algo):
    q, k, v = qkv(70, 90, 16)
    out, lse, _ = algo(q, k, v, softmax_scale=0.3, causal=True)
    out_ref, lse_ref = reference(q, k, v, softmax_scale=0.3, causal=True)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(lse, lse_ref, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- traffic


def test_block_sizes():
    # M = 131072 / 4 = 32768 elements; Bc = ceil(32768 / 256) = 128, Br = min(128, 64).
    assert block_sizes(128 * KIB, 64) == (64, 128)
    assert block_sizes(100_000, 64) == (64, 98)  # ceil(25000 / 256) = 98
    assert block_sizes(100_000, 64, itemsize=2) == (64, 196)  # fp16: M = 50 000
    assert block_sizes(4 * KIB, 64) == (4, 4)  # small M: Br = Bc < d


def standard_closed_form(nq, nk, d):
    """Elements (read, written) of Algorithm 0; see standard_attention's docstring."""
    read = (nq * d + nk * d) + nq * nk + (nq * nk + nk * d)  # Q,K | S | P,V
    written = nq * nk + (nq * nk + nq) + nq * d  # S | P, LSE | O
    return read, written


@pytest.mark.parametrize("nq,nk,d", [(1024, 1024, 64), (113, 203, 59), (1, 147, 32)])
def test_standard_traffic_exact(nq, nk, d):
    _, _, io = standard_attention(*qkv(nq, nk, d))
    read, written = standard_closed_form(nq, nk, d)
    assert io.bytes_read == read * FP32
    assert io.bytes_written == written * FP32


def test_standard_traffic_numbers_and_scaling():
    _, _, io1 = standard_attention(*qkv(1024, 1024, 64))
    _, _, io2 = standard_attention(*qkv(2048, 2048, 64))
    # read 3Nd + 2N^2, write 2N^2 + Nd + N, fp32
    assert (io1.bytes_read, io1.bytes_written, io1.total) == (9_175_040, 8_654_848, 17_829_888)
    assert io2.total == 69_214_208
    assert 3.7 < io2.total / io1.total < 4.0  # 3.88: N^2 dominates
    _, _, io16 = standard_attention(*qkv(256, 256, 64), itemsize=2)
    assert io16.total == standard_attention(*qkv(256, 256, 64))[2].total // 2


def test_fa1_traffic_exact():
    # read 2Nd + Tc(2Nd + 2N), written (1 + Tc)(Nd + 2N), Tc = ceil(N / Bc)
    n, d = 1024, 64
    for sram_bytes, tc in [(128 * KIB, 8), (256 * KIB, 4), (100_000, 11)]:
        _, _, io = flash_attention_v1(*qkv(n, n, d), sram_bytes=sram_bytes)
        assert io.bytes_read == (2 * n * d + tc * (2 * n * d + 2 * n)) * FP32
        assert io.bytes_written == (1 + tc) * (n * d + 2 * n) * FP32


def test_fa1_traffic_scales_as_n2d2_over_m():
    q, k, v = qkv(1024, 1024, 64)
    io_m = flash_attention_v1(q, k, v, sram_bytes=128 * KIB)[2]
    io_2m = flash_attention_v1(q, k, v, sram_bytes=256 * KIB)[2]
    assert (io_m.total, io_2m.total) == (7_217_152, 4_005_888)
    assert 1.6 <= io_m.total / io_2m.total <= 2.4  # 1.80: doubling M ~ halves traffic

    io_2n = flash_attention_v1(*qkv(2048, 2048, 64), sram_bytes=128 * KIB)[2]
    assert io_2n.total == 27_279_360
    assert 3.5 <= io_2n.total / io_m.total <= 4.2  # 3.78: doubling N ~ quadruples it


def test_flash_moves_less_than_standard():
    n, d, sram_bytes = 1024, 64, 100_000
    q, k, v = qkv(n, n, d)
    std = standard_attention(q, k, v)[2]
    fa1 = flash_attention_v1(q, k, v, sram_bytes=sram_bytes)[2]
    fa2 = flash_attention_v2(q, k, v, sram_bytes=sram_bytes)[2]
    assert (std.bytes_read, std.bytes_written) == (9_175_040, 8_654_848)
    assert (fa1.bytes_read, fa1.bytes_written) == (6_381_568, 3_244_032)
    assert (fa2.bytes_read, fa2.bytes_written) == (8_650_752, 266_240)
    for fa in (fa1, fa2):
        assert fa.bytes_read < std.bytes_read and fa.bytes_written < std.bytes_written
    # FA-2 writes O and the LSE exactly once ...
    assert fa2.bytes_written == (n * d + n) * FP32
    # ... and reads Q once plus K, V once per Q block (Tr = 1024 / 64 = 16).
    assert fa2.bytes_read == (n * d + 16 * 2 * n * d) * FP32


def test_fa2_causal_skips_blocks_above_diagonal():
    n, d, sram_bytes = 512, 64, 128 * KIB  # Br = 64, Bc = 128
    q, k, v = qkv(n, n, d)
    dense = flash_attention_v2(q, k, v, sram_bytes=sram_bytes)[2]
    causal = flash_attention_v2(q, k, v, sram_bytes=sram_bytes, causal=True)[2]
    # Q block r (rows 64r..64r+63) needs K/V blocks 0..floor((64r+63)/128):
    # 1+1+2+2+3+3+4+4 = 20 of the 8*4 = 32 dense visits.
    assert dense.bytes_read == (n * d + 32 * 2 * 128 * d) * FP32
    assert causal.bytes_read == (n * d + 20 * 2 * 128 * d) * FP32
    assert causal.bytes_written == dense.bytes_written == (n * d + n) * FP32


# ---------------------------------------------------------------- memory model


def test_sram_overflow_raises():
    hbm = HBM(itemsize=4)
    hbm.place("X", np.zeros((10, 10)))
    sram = SRAM(hbm, capacity_bytes=400)  # 100 fp32 elements
    a = sram.load("X", slice(0, 5))  # 200 B
    sram.load("X", slice(5, 10))  # 400 B: exactly full
    with pytest.raises(SRAMOverflowError):
        sram.load("X", slice(0, 1))
    sram.free(a)
    sram.alloc((50,), 0.0)  # room again after the free
    assert sram.used == 400 and hbm.io.peak_sram_bytes == 400
    assert hbm.io.bytes_read == 400 and hbm.io.bytes_written == 0


def test_hbm_counts_slices():
    hbm = HBM(itemsize=2)
    hbm.place("X", np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(hbm.read("X", slice(1, 3)), [[3, 4, 5], [6, 7, 8]])
    hbm.write("X", slice(0, 1), np.ones((1, 3)))
    assert (hbm.io.bytes_read, hbm.io.bytes_written, hbm.io.total) == (12, 6, 18)
    with pytest.raises(ValueError):
        hbm.write("X", slice(0, 2), np.ones((1, 3)))  # shape mismatch, no broadcast


@pytest.mark.parametrize("algo", [flash_attention_v1, flash_attention_v2])
def test_sram_too_small_for_blocks(algo):
    q, k, v = qkv(64, 64, 64)
    # 64 KiB = 16384 elements: Bc = Br = 64, and Q_i, O_i, K_j, V_j, l_i, m_i
    # need 4*64*64 + 2*64 = 16512 elements. The paper's sizes overshoot by l, m.
    with pytest.raises(ValueError, match="sram_bytes"):
        algo(q, k, v, sram_bytes=64 * KIB)
    with pytest.raises(ValueError, match="sram_bytes"):
        algo(q, k, v, sram_bytes=0)
    algo(q, k, v, sram_bytes=4 * 64 * 64 * FP32 + 8 * 64 * FP32)  # 4d^2 + 8d fits


@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda f: f.__name__)
def test_input_validation(algo):
    q, k, v = qkv(8, 8, 4)
    with pytest.raises(ValueError, match="Q"):
        algo(q[None], k, v)
    with pytest.raises(ValueError, match="K"):
        algo(q, k[:, :3], v)
    with pytest.raises(ValueError, match="V"):
        algo(q, k, v[:5])
    with pytest.raises(ValueError, match="itemsize"):
        algo(q, k, v, itemsize=0)
