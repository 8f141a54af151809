"""Tiled attention in NumPy, as the FlashAttention papers describe it.

A teaching module: correctness and byte counts, not speed. Each algorithm
runs one head: Q (Nq, d), K and V (Nk, d), float64 arithmetic. Every read
or write of off-chip memory goes through `HBM.read` / `HBM.write` on a
slice, so the returned `IOCount` is the algorithm's real HBM traffic; data
brought on chip is charged to an `SRAM` of fixed capacity that raises when
an algorithm holds more than fits.

- `standard_attention`: FlashAttention-1 paper, Algorithm 0. S and P make
  a round trip through HBM: Theta(Nd + N^2) bytes.
- `flash_attention_v1`: FlashAttention-1, Algorithm 1. K/V blocks outside,
  Q blocks inside; O, l, m go back to HBM after every tile:
  Theta(N^2 d^2 / M) bytes.
- `flash_attention_v2`: FlashAttention-2 loop order. Q blocks outside; the
  output accumulator and softmax statistics stay on chip; O and the LSE are
  written once.

Masking: ``causal=True`` is bottom-right aligned, as in flash_attn: query i
sees key j iff ``j <= i + Nk - Nq``. A query that sees no key at all (only
possible when Nq > Nk) gets output 0 and LSE -inf, like `attention_ref`.

Bytes are counted at ``itemsize`` bytes per element (default 4: a fp32
kernel), whatever NumPy's own dtype; the arithmetic stays float64 so the
results can be checked to ~1e-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IOCount",
    "HBM",
    "SRAM",
    "SRAMOverflowError",
    "block_sizes",
    "standard_attention",
    "flash_attention_v1",
    "flash_attention_v2",
]

# A100: 192 KB of on-chip SRAM per streaming multiprocessor.
DEFAULT_SRAM_BYTES = 192 * 1024


# --------------------------------------------------------------------------
# The memory model
# --------------------------------------------------------------------------


@dataclass
class IOCount:
    """HBM traffic of one run, in bytes, plus the most SRAM held at once."""

    bytes_read: int = 0
    bytes_written: int = 0
    peak_sram_bytes: int = 0

    @property
    def total(self) -> int:
        return self.bytes_read + self.bytes_written


class SRAMOverflowError(MemoryError):
    """An algorithm tried to hold more on chip than the SRAM has."""


class HBM:
    """Off-chip memory: named float64 arrays and a count of bytes moved."""

    def __init__(self, itemsize: int = 4):
        self.itemsize = itemsize
        self.io = IOCount()
        self._arrays: dict[str, np.ndarray] = {}

    def place(self, name: str, array: np.ndarray) -> None:
        """Put an input in HBM, uncounted: inputs are there before we start."""
        self._arrays[name] = np.array(array, dtype=np.float64)

    def reserve(self, name: str, shape: tuple[int, ...]) -> None:
        """Reserve space for a result, uncounted: allocating moves no data."""
        self._arrays[name] = np.full(shape, np.nan)  # NaN exposes unwritten parts

    def fill(self, name: str, shape: tuple[int, ...], value: float) -> None:
        """Create an array filled with `value`; this is a write and is counted."""
        self._arrays[name] = np.full(shape, value, dtype=np.float64)
        self.io.bytes_written += self._arrays[name].size * self.itemsize

    def read(self, name: str, index=slice(None)) -> np.ndarray:
        tile = self._arrays[name][index].copy()  # a copy: on-chip data is separate
        self.io.bytes_read += tile.size * self.itemsize
        return tile

    def write(self, name: str, index, tile: np.ndarray) -> None:
        region = self._arrays[name][index]
        if region.shape != np.shape(tile):  # no broadcasting: counts must be exact
            raise ValueError(f"writing {np.shape(tile)} into {name}{region.shape}")
        self._arrays[name][index] = tile
        self.io.bytes_written += region.size * self.itemsize

    def __getitem__(self, name: str) -> np.ndarray:
        """The host's view of a result once the algorithm is done (uncounted)."""
        return self._arrays[name]


class SRAM:
    """On-chip memory of `capacity_bytes` (None = unbounded).

    Tiles loaded from HBM and accumulators allocated on chip stay charged
    until `free`. The transient score tile S_ij / P_ij is not charged: the
    papers' block sizes budget only the operands and the running state
    (FA-1 Algorithm 1, line 1: "Bc = ceil(M / 4d)", four d-wide tiles).
    """

    def __init__(self, hbm: HBM, capacity_bytes: int | None):
        self.hbm = hbm
        self.capacity = capacity_bytes
        self.used = 0
        self._live: dict[int, np.ndarray] = {}

    def load(self, name: str, index=slice(None)) -> np.ndarray:
        # Check the space first: a load that does not fit moves no bytes.
        self._claim(self.hbm[name][index].size)
        tile = self.hbm.read(name, index)
        self._live[id(tile)] = tile  # kept alive so its id stays unique
        return tile

    def alloc(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        tile = np.full(shape, value, dtype=np.float64)
        self._claim(tile.size)
        self._live[id(tile)] = tile
        return tile

    def store(self, name: str, index, tile: np.ndarray) -> None:
        self.hbm.write(name, index, tile)

    def free(self, *tiles: np.ndarray) -> None:
        for tile in tiles:
            self.used -= self._live.pop(id(tile)).size * self.hbm.itemsize

    def _claim(self, size: int) -> None:
        nbytes = size * self.hbm.itemsize
        if self.capacity is not None and self.used + nbytes > self.capacity:
            raise SRAMOverflowError(
                f"SRAM overflow: {self.used} B live + {nbytes} B > {self.capacity} B"
            )
        self.used += nbytes
        io = self.hbm.io
        io.peak_sram_bytes = max(io.peak_sram_bytes, self.used)


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def _setup(Q, K, V, softmax_scale, itemsize):
    """Validate the inputs and put Q, K, V in a fresh HBM."""
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    for name, x in (("Q", Q), ("K", K), ("V", V)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (seq, d), got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"{name} must be non-empty, got shape {x.shape}")
    if K.shape[1] != Q.shape[1]:
        raise ValueError(f"K has d={K.shape[1]} but Q has d={Q.shape[1]}")
    if V.shape != K.shape:
        raise ValueError(f"V must have K's shape {K.shape}, got {V.shape}")
    if not isinstance(itemsize, int) or itemsize <= 0:
        raise ValueError(f"itemsize must be a positive int, got {itemsize!r}")
    d = Q.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    hbm = HBM(itemsize)
    for name, x in (("Q", Q), ("K", K), ("V", V)):
        hbm.place(name, x)
    return hbm, Q.shape[0], K.shape[0], d, scale


def block_sizes(sram_bytes: int, d: int, itemsize: int = 4) -> tuple[int, int]:
    """FlashAttention-1 block sizes (Br, Bc) for an SRAM of `sram_bytes`.

    The paper's M counts elements; here ``M = sram_bytes // itemsize``.
    Then ``Bc = ceil(M / 4d)`` and ``Br = min(Bc, d)`` (Algorithm 1, line 1).
    """
    if not isinstance(sram_bytes, int) or sram_bytes <= 0:
        raise ValueError(f"sram_bytes must be a positive int, got {sram_bytes!r}")
    m_elems = sram_bytes // itemsize
    if m_elems < 1:
        raise ValueError(f"sram_bytes={sram_bytes} holds no {itemsize}-byte element")
    bc = -(-m_elems // (4 * d))  # ceil
    return min(bc, d), bc


def _checked_block_sizes(sram_bytes: int, d: int, itemsize: int) -> tuple[int, int]:
    """Block sizes, after checking that the tiles held at once fit in SRAM.

    Both FA-1 and FA-2 hold Q_i and O_i (Br x d), l_i and m_i (Br), and K_j
    and V_j (Bc x d). Because of the ceil and the two statistics vectors the
    paper's sizes overshoot M by a little, so they fit only for
    M >= about 4d^2 + 8d elements; below that we refuse rather than overflow.
    """
    br, bc = block_sizes(sram_bytes, d, itemsize)
    need = ((2 * br + 2 * bc) * d + 2 * br) * itemsize
    if need > sram_bytes:
        raise ValueError(
            f"sram_bytes={sram_bytes} is too small for d={d}: blocks Br={br}, "
            f"Bc={bc} need {need} bytes on chip"
        )
    return br, bc


def _blocks(n: int, size: int):
    """Row slices [0, size), [size, 2 size), ... covering range(n)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _scores(Qi, Kj, rows: slice, cols: slice, scale, causal, nq, nk):
    """Scaled score tile; masked entries are -inf so exp() turns them into 0."""
    s = scale * (Qi @ Kj.T)
    if causal:
        i = np.arange(rows.start, rows.stop)[:, None]
        j = np.arange(cols.start, cols.stop)[None, :]
        s = np.where(j > i + (nk - nq), -np.inf, s)
    return s


def _above_diagonal(rows: slice, cols: slice, nq: int, nk: int) -> bool:
    """True when even the tile's last query row sees none of its keys."""
    return cols.start > (rows.stop - 1) + (nk - nq)


def _exp_shifted(x, m):
    """exp(x - m), reading m = -inf (row has seen no key yet) as no shift.

    A row that is fully masked so far has x = m = -inf, and -inf - -inf is
    NaN; shifting by 0 instead gives exp(-inf) = 0, which is what we want.
    """
    return np.exp(x - np.where(np.isneginf(m), 0.0, m))


def _divide_rows(x, denom):
    """x / denom[:, None], with 0 for rows whose softmax sum is 0 (no key seen)."""
    return np.divide(x, denom[:, None], out=np.zeros_like(x), where=denom[:, None] > 0)


def _lse(m, l):
    """log(sum exp) from the running max and the sum taken relative to it."""
    with np.errstate(divide="ignore"):  # l = 0 -> log 0 = -inf, as wanted
        return m + np.log(l)


# --------------------------------------------------------------------------
# Algorithm 0: standard attention
# --------------------------------------------------------------------------


def standard_attention(Q, K, V, *, causal=False, softmax_scale=None, itemsize=4):
    """Standard attention (FlashAttention-1 paper, Algorithm 0).

    1. Load Q, K; compute S = scale * Q K^T; write S.
    2. Read S; compute P = softmax(S) (and the row LSE); write P and LSE.
    3. Load P, V; compute O = P V; write O.

    Each step streams its operands through the chip once. Block order does
    not change those counts, so SRAM is modelled as unbounded here. Traffic,
    in elements:

        read    = Nq d + Nk d  +  Nq Nk  +  Nq Nk + Nk d
        written = Nq Nk        +  Nq Nk + Nq     +  Nq d

    i.e. Theta(N d + N^2) for Nq = Nk = N.

    Returns (O (Nq, d), lse (Nq,), IOCount).
    """
    hbm, nq, nk, d, scale = _setup(Q, K, V, softmax_scale, itemsize)
    sram = SRAM(hbm, capacity_bytes=None)
    everything = (slice(None), slice(None))
    for name, shape in (("S", (nq, nk)), ("P", (nq, nk)), ("O", (nq, d)), ("L", (nq,))):
        hbm.reserve(name, shape)

    q, k = sram.load("Q"), sram.load("K")
    sram.store("S", everything, _scores(q, k, slice(0, nq), slice(0, nk), scale, causal, nq, nk))
    sram.free(q, k)

    s = sram.load("S")
    m = s.max(axis=1)
    p = _exp_shifted(s, m[:, None])
    l = p.sum(axis=1)
    sram.store("P", everything, _divide_rows(p, l))
    sram.store("L", slice(None), _lse(m, l))
    sram.free(s)

    p, v = sram.load("P"), sram.load("V")
    sram.store("O", everything, p @ v)
    sram.free(p, v)
    return hbm["O"], hbm["L"], hbm.io


# --------------------------------------------------------------------------
# FlashAttention-1, Algorithm 1
# --------------------------------------------------------------------------


def flash_attention_v1(
    Q, K, V, *, sram_bytes=DEFAULT_SRAM_BYTES, causal=False, softmax_scale=None, itemsize=4
):
    """FlashAttention-1 forward (Algorithm 1 of the paper).

    M = sram_bytes // itemsize elements; Bc = ceil(M / 4d), Br = min(Bc, d).
    O, l, m live in HBM (initialised there: a counted write of Nq d + 2 Nq).
    The outer loop walks K/V blocks, the inner loop Q blocks, so every
    (i, j) tile reads Q_i, O_i, l_i, m_i and writes O_i, l_i, m_i back:

        read    = 2 Nk d + Tc (2 Nq d + 2 Nq)
        written = (1 + Tc)(Nq d + 2 Nq),        Tc = ceil(Nk / Bc)

    With Tc ~ 4 N d / M that is Theta(N^2 d^2 / M). O_i is kept normalised
    after every tile (the paper's eager rescaling). The causal mask is
    applied inside each tile; unlike FA-2 no tile is skipped (Algorithm 1
    has no mask; the block-sparse Algorithm 5 is what would skip).

    Raises ValueError when the blocks do not fit in `sram_bytes`.
    Returns (O (Nq, d), lse (Nq,), IOCount); lse = m + log l is read off
    the final l, m on the host, uncounted, like O itself.
    """
    hbm, nq, nk, d, scale = _setup(Q, K, V, softmax_scale, itemsize)
    br, bc = _checked_block_sizes(sram_bytes, d, itemsize)
    sram = SRAM(hbm, sram_bytes)
    hbm.fill("O", (nq, d), 0.0)
    hbm.fill("l", (nq,), 0.0)
    hbm.fill("m", (nq,), -np.inf)

    for cols in _blocks(nk, bc):
        k_j, v_j = sram.load("K", cols), sram.load("V", cols)
        for rows in _blocks(nq, br):
            q_i, o_i = sram.load("Q", rows), sram.load("O", rows)
            l_i, m_i = sram.load("l", rows), sram.load("m", rows)

            s = _scores(q_i, k_j, rows, cols, scale, causal, nq, nk)
            m_tile = s.max(axis=1)
            p = _exp_shifted(s, m_tile[:, None])
            l_tile = p.sum(axis=1)

            # Merge this tile's softmax into the running one (both rescaled
            # to the new max), then renormalise O_i by the new sum.
            m_new = np.maximum(m_i, m_tile)
            old = _exp_shifted(m_i, m_new) * l_i  # weight of the old O_i
            new = _exp_shifted(m_tile, m_new)     # weight of this tile's P V
            l_new = old + new * l_tile
            o_i[...] = _divide_rows(old[:, None] * o_i + new[:, None] * (p @ v_j), l_new)
            l_i[...], m_i[...] = l_new, m_new

            sram.store("O", rows, o_i)
            sram.store("l", rows, l_i)
            sram.store("m", rows, m_i)
            sram.free(q_i, o_i, l_i, m_i)
        sram.free(k_j, v_j)

    return hbm["O"], _lse(hbm["m"], hbm["l"]), hbm.io


# --------------------------------------------------------------------------
# FlashAttention-2 loop order
# --------------------------------------------------------------------------


def flash_attention_v2(
    Q, K, V, *, sram_bytes=DEFAULT_SRAM_BYTES, causal=False, softmax_scale=None, itemsize=4
):
    """FlashAttention-2 forward (Algorithm 1 of the FlashAttention-2 paper).

    Same block sizes as `flash_attention_v1`, for a like-for-like count.
    The outer loop walks Q blocks: Q_i is loaded once and the unnormalised
    accumulator O_i, running max m_i and sum l_i stay on chip while the
    inner loop streams K/V blocks. Rescaling is lazy: O_i is divided by l_i
    once, at the end, and O_i and LSE_i = m_i + log l_i are written once.
    With ``causal``, K/V blocks entirely above the diagonal are not loaded.

        read    = Nq d + (K/V blocks visited) * 2 Bc d   (= Tr 2 Nk d dense)
        written = Nq d + Nq

    Raises ValueError when the blocks do not fit in `sram_bytes`.
    Returns (O (Nq, d), lse (Nq,), IOCount).
    """
    hbm, nq, nk, d, scale = _setup(Q, K, V, softmax_scale, itemsize)
    br, bc = _checked_block_sizes(sram_bytes, d, itemsize)
    sram = SRAM(hbm, sram_bytes)
    hbm.reserve("O", (nq, d))
    hbm.reserve("L", (nq,))

    for rows in _blocks(nq, br):
        n = rows.stop - rows.start
        q_i = sram.load("Q", rows)
        acc = sram.alloc((n, d), 0.0)  # unnormalised O_i
        l_i = sram.alloc((n,), 0.0)
        m_i = sram.alloc((n,), -np.inf)

        for cols in _blocks(nk, bc):
            if causal and _above_diagonal(rows, cols, nq, nk):
                break  # every later block lies further right: all masked
            k_j, v_j = sram.load("K", cols), sram.load("V", cols)
            s = _scores(q_i, k_j, rows, cols, scale, causal, nq, nk)
            m_new = np.maximum(m_i, s.max(axis=1))
            p = _exp_shifted(s, m_new[:, None])
            shrink = _exp_shifted(m_i, m_new)  # old terms were relative to m_i
            l_i[...] = shrink * l_i + p.sum(axis=1)
            acc[...] = shrink[:, None] * acc + p @ v_j
            m_i[...] = m_new
            sram.free(k_j, v_j)

        sram.store("O", rows, _divide_rows(acc, l_i))
        sram.store("L", rows, _lse(m_i, l_i))
        sram.free(q_i, acc, l_i, m_i)

    return hbm["O"], hbm["L"], hbm.io
