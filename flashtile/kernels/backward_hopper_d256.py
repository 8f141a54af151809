"""FlashAttention-3-style backward for head dim 256 on Hopper (sm_90), written in Gluon.

The layout of `backward_hopper.py` (each consumer warpgroup owns 64 keys and their
dK / dV rows) does not fit at d256: dK and dV of 64 keys take 256 fp32 registers per
thread of a warpgroup. Here the warpgroups split the work two ways, as FlashAttention-3
does at this head dim:

* the scores by keys: warpgroup w computes S and dP of all 64 queries of a tile against
  its 32 keys (S = Q K_w^T, dP = dO V_w^T, wgmma N = 32) and writes P^T, dS^T rows
  [32 w, 32 w + 32) to shared memory;
* the gradients by head-dim columns: after both warpgroups meet on an mbarrier,
  warpgroup w accumulates dV[:, cols w] += P^T dO[:, cols w] and dK[:, cols w] +=
  dS^T Q[:, cols w] over the CTA's 64 keys (64 registers each), and computes
  dQ[:, cols w] = dS K[:, cols w] in two 64-column chunks, each staged in shared memory
  and added into the fp32 dQ buffer by the copy engine's reduce-add.

Those adds are a quarter of the time (H200: 361 -> 480 TFLOP/s without them, NOTES.md
session 8): 64 KB of fp32 per tile of 64 keys, twice the bytes per flop of the d128
kernel's 128-key tiles. Not the wait between the two chunks: staging the first one in
the Q slot (so the second need not wait for its copies) was 1-5% slower.

One CTA = 64 keys of one (batch, KV head); K and V stay in shared memory. The shared
memory budget (227 KB) sets the rings: Q in two slots, dO in one (FlashAttention-3's
d256 choice too); dO's slot is released as soon as dV is issued and done, so its reload
overlaps dK and dQ. A 1-warp loader streams them by TMA with the rows' LSE / Delta.

Scope: what `backward_hopper.supports` accepts, at head dim 256.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from .hopper_common import launch_backward, query_band, reduce_dq, store_dkdv, tile_coords
from .launcher import CachedKernel

KEYS = 64  # keys per CTA
BLOCK_M = 64  # queries per tile
DQ_CHUNK = 64  # dQ columns staged at a time (one 64-column swizzle block of K)
# (Q slots, dO slots, consumer registers, loader registers)
CONFIG = (2, 1, 240, 24)


@gluon.jit
def _loader(q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, lse_smem,
            delta_smem, kv_bar, q_full, q_empty, do_full, do_empty, Stats, stats_len,
            num_heads, b, hk, n0, kv_group, m_begin, n_m):
    """Producer warp: K and V once, then per query tile Q (with its LSE rows) into the Q
    ring and dO (with its Delta rows) into the dO ring. A slot is refilled once both
    consumers arrived on its `empty` barrier."""
    Q_STAGES: gl.constexpr = q_smem.shape[0]
    DO_STAGES: gl.constexpr = do_smem.shape[0]
    BLOCK: gl.constexpr = q_smem.shape[2]
    st_layout: gl.constexpr = gl.BlockedLayout([BLOCK // 32], [32], [1], [0])
    cols = gl.arange(0, BLOCK, layout=st_layout)
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [b, n0, hk, 0], kv_bar, k_smem)
    tma.async_copy_global_to_shared(v_desc, [b, n0, hk, 0], kv_bar, v_smem)
    for t in range(kv_group * n_m):
        m, h = tile_coords(t, n_m, m_begin, hk, kv_group, BLOCK)
        st = Stats + ((b * num_heads + h) * 2 * stats_len + m).to(gl.int64) + cols
        slot = t % Q_STAGES
        mbarrier.wait(q_empty.index(slot), ((t // Q_STAGES) & 1) ^ 1, pred=t >= Q_STAGES)
        lse_smem.index(slot).store(gl.load(st))
        gl.thread_barrier()  # the warp's stores before the arrive below releases them
        mbarrier.expect(q_full.index(slot), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [b, m, h, 0], q_full.index(slot),
                                        q_smem.index(slot))
        dslot = t % DO_STAGES
        mbarrier.wait(do_empty.index(dslot), ((t // DO_STAGES) & 1) ^ 1, pred=t >= DO_STAGES)
        delta_smem.index(dslot).store(gl.load(st + stats_len))
        gl.thread_barrier()
        mbarrier.expect(do_full.index(dslot), do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(do_desc, [b, m, h, 0], do_full.index(dslot),
                                        do_smem.index(dslot))


@gluon.jit
def _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
              kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
              kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
              stride_kb, stride_ks, stride_kh, WG: gl.constexpr):
    """Consumer warpgroup WG: S / dP against keys n0 + [32 WG, 32 WG + 32), dK / dV / dQ
    columns [128 WG, 128 WG + 128), every query tile of the band."""
    dtype: gl.constexpr = q_smem.dtype
    Q_STAGES: gl.constexpr = q_smem.shape[0]
    DO_STAGES: gl.constexpr = do_smem.shape[0]
    BLOCK: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    NKEYS: gl.constexpr = k_smem.shape[1]
    KEYS_W: gl.constexpr = NKEYS // 2  # S / dP keys of this warpgroup
    COLS: gl.constexpr = HEAD_DIM // 2  # dK / dV / dQ columns of this warpgroup
    CHUNK: gl.constexpr = dq_smem.shape[4]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, KEYS_W, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, COLS, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, CHUNK, 16])
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)

    k_all = k_smem.reshape([NKEYS, HEAD_DIM])
    k_w_t = k_all.slice(WG * KEYS_W, KEYS_W, dim=0).permute((1, 0))
    v_w_t = v_smem.reshape([NKEYS, HEAD_DIM]).slice(WG * KEYS_W, KEYS_W, dim=0).permute((1, 0))
    col0: gl.constexpr = WG * COLS
    k_dq0 = k_all.slice(col0, CHUNK, dim=1)  # dQ's B operands, one 64-column block each
    k_dq1 = k_all.slice(col0 + CHUNK, CHUNK, dim=1)
    keys = n0 + WG * KEYS_W + gl.arange(0, KEYS_W, layout=gl.SliceLayout(0, s_layout))
    rows_m = gl.arange(0, BLOCK, layout=row_layout)
    dk = gl.zeros([NKEYS, COLS], gl.float32, layout=acc_layout)
    dv = gl.zeros([NKEYS, COLS], gl.float32, layout=acc_layout)
    s_zero = gl.zeros([BLOCK, KEYS_W], gl.float32, layout=s_layout)
    dq_zero = gl.zeros([BLOCK, CHUNK], gl.float32, layout=dq_layout)
    dq_buf = dq_smem.index(WG)
    mbarrier.wait(kv_bar, 0)

    for t in range(kv_group * n_m):
        m, h = tile_coords(t, n_m, m_begin, hk, kv_group, BLOCK)
        slot = t % Q_STAGES
        dslot = t % DO_STAGES
        mbarrier.wait(q_full.index(slot), (t // Q_STAGES) & 1)
        q = q_smem.index(slot).reshape([BLOCK, HEAD_DIM])
        s = warpgroup_mma(q, k_w_t, s_zero, use_acc=False, is_async=True)
        mbarrier.wait(do_full.index(dslot), (t // DO_STAGES) & 1)
        do = do_smem.index(dslot).reshape([BLOCK, HEAD_DIM])
        dp = warpgroup_mma(do, v_w_t, s_zero, use_acc=False, is_async=True)
        lse2 = lse_smem.index(slot).load(row_layout)  # LSE in log2 units
        s = warpgroup_mma_wait(1, deps=[s])
        p = gl.exp2(s * qk_scale - lse2[:, None])
        if t % n_m < n_masked:  # near the diagonal: keys past i + diag get P = 0
            p = gl.where(keys[None, :] <= (m + rows_m)[:, None] + diag, p, 0.0)
        delta = delta_smem.index(dslot).load(row_layout)
        dp = warpgroup_mma_wait(0, deps=[dp])
        ds = p * (dp - delta[:, None])

        # P^T, dS^T rows of this warpgroup's keys to shared memory; meet the other one.
        buf = t % 2
        p_t = p_smem.index(buf)
        ds_t = ds_smem.index(buf)
        p_t.slice(WG * KEYS_W, KEYS_W, dim=0).store(gl.permute(p.to(dtype), (1, 0)))
        ds_t.slice(WG * KEYS_W, KEYS_W, dim=0).store(gl.permute(ds.to(dtype), (1, 0)))
        fence_async_shared()  # the wgmma (async proxy) reads what this proxy wrote
        mbarrier.arrive(ds_bar.index(buf), count=1)
        mbarrier.wait(ds_bar.index(buf), (t // 2) & 1)

        dv = warpgroup_mma(p_t, do.slice(col0, COLS, dim=1), dv, is_async=True)
        dk = warpgroup_mma(ds_t, q.slice(col0, COLS, dim=1), dk, is_async=True)
        dq0 = warpgroup_mma(ds_t.permute((1, 0)), k_dq0, dq_zero, use_acc=False, is_async=True)
        dq1 = warpgroup_mma(ds_t.permute((1, 0)), k_dq1, dq_zero, use_acc=False, is_async=True)
        dv = warpgroup_mma_wait(3, deps=[dv])
        mbarrier.arrive(do_empty.index(dslot), count=1)  # dO's last reader is done
        dk = warpgroup_mma_wait(2, deps=[dk])
        mbarrier.arrive(q_empty.index(slot), count=1)
        dq0 = warpgroup_mma_wait(1, deps=[dq0])
        tma.store_wait(0)  # the previous chunk's copies have read dq_buf
        reduce_dq(dq0, dq_buf, dq_desc, b, m, h, col0, grad_scale)
        dq1 = warpgroup_mma_wait(0, deps=[dq1])
        tma.store_wait(0)
        reduce_dq(dq1, dq_buf, dq_desc, b, m, h, col0 + CHUNK, grad_scale)
    tma.store_wait(0)

    store_dkdv(DK, DV, dk, dv, n0, col0, b, hk, seqlen_k, grad_scale, stride_kb, stride_ks,
               stride_kh, acc_layout)


# The two warpgroups' entry points (WG picks shared-memory slices: a compile-time value).
@gluon.jit
def _consumer0(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
               kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
               kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
               stride_kb, stride_ks, stride_kh):
    _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
              kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
              kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
              stride_kb, stride_ks, stride_kh, 0)


@gluon.jit
def _consumer1(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
               kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
               kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
               stride_kb, stride_ks, stride_kh):
    _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
              kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
              kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
              stride_kb, stride_ks, stride_kh, 1)


@gluon.jit
def _init_barriers(bars, count: gl.constexpr):
    """Every mbarrier of a [n, 1] array, each expecting `count` arrives per phase."""
    N: gl.constexpr = bars.shape[0]
    for i in gl.static_range(N):
        mbarrier.init(bars.index(i), count=count)


@gluon.jit
def _bwd_kernel(q_desc, do_desc, k_desc, v_desc, dq_desc, DK, DV, Stats, stats_len,
                stride_kb, stride_ks, stride_kh, num_heads, kv_heads, seqlen_q, seqlen_k,
                qk_scale, grad_scale,
                CAUSAL: gl.constexpr, Q_STAGES: gl.constexpr, DO_STAGES: gl.constexpr,
                DQ_COLS: gl.constexpr, CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr):
    """One CTA = KEYS keys of one (batch, KV head): a producer warp and two consumer
    warpgroups. dK / dV (B, Sk, Hk, D) share strides (the host makes them alike)."""
    dtype: gl.constexpr = q_desc.dtype
    BLOCK: gl.constexpr = q_desc.block_type.shape[1]
    NKEYS: gl.constexpr = k_desc.block_type.shape[1]
    bhk = gl.program_id(1) + gl.program_id(2) * gl.num_programs(1)  # batch_head_grid
    b = bhk // kv_heads
    hk = bhk % kv_heads
    kv_group = num_heads // kv_heads
    n0 = gl.program_id(0) * NKEYS
    diag, m_begin, n_m, n_masked = query_band(n0, seqlen_q, seqlen_k, NKEYS, BLOCK, CAUSAL)

    q_smem = gl.allocate_shared_memory(dtype, [Q_STAGES] + q_desc.block_type.shape,
                                       q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [DO_STAGES] + do_desc.block_type.shape,
                                        do_desc.layout)
    st_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    lse_smem = gl.allocate_shared_memory(gl.float32, [Q_STAGES, BLOCK], st_layout)
    delta_smem = gl.allocate_shared_memory(gl.float32, [DO_STAGES, BLOCK], st_layout)
    k_smem = gl.allocate_shared_memory(dtype, k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, v_desc.block_type.shape, v_desc.layout)
    pt_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([NKEYS, BLOCK], dtype)
    p_smem = gl.allocate_shared_memory(dtype, [2, NKEYS, BLOCK], pt_layout)
    ds_smem = gl.allocate_shared_memory(dtype, [2, NKEYS, BLOCK], pt_layout)
    dq_smem = gl.allocate_shared_memory(gl.float32, [2, 1, BLOCK, 1, DQ_COLS], dq_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_full = gl.allocate_shared_memory(gl.int64, [Q_STAGES, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [Q_STAGES, 1], mbarrier.MBarrierLayout())
    do_full = gl.allocate_shared_memory(gl.int64, [DO_STAGES, 1], mbarrier.MBarrierLayout())
    do_empty = gl.allocate_shared_memory(gl.int64, [DO_STAGES, 1], mbarrier.MBarrierLayout())
    ds_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    _init_barriers(q_full, 1)
    _init_barriers(do_full, 1)
    _init_barriers(q_empty, 2)  # one arrive per consumer warpgroup
    _init_barriers(do_empty, 2)
    _init_barriers(ds_bar, 2)

    args = (q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, p_smem, ds_smem, dq_smem,
            kv_bar, q_full, q_empty, do_full, do_empty, ds_bar, DK, DV, dq_desc, b, hk, n0,
            kv_group, m_begin, n_m, n_masked, seqlen_k, diag, qk_scale, grad_scale,
            stride_kb, stride_ks, stride_kh)
    gl.warp_specialize([
        (_consumer0, args),
        (_consumer1, args),
        (_loader, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, lse_smem,
                   delta_smem, kv_bar, q_full, q_empty, do_full, do_empty, Stats, stats_len,
                   num_heads, b, hk, n0, kv_group, m_begin, n_m)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


_bwd_launch = CachedKernel(_bwd_kernel)


def attention_backward(dout, q, k, v, stats, dq_acc, dq, dk, dv, *, softmax_scale: float,
                       causal: bool):
    """`backward_hopper.attention_backward` at head dim 256 (same contract)."""
    q_stages, do_stages, consumer_regs, loader_regs = CONFIG
    launch_backward(_bwd_launch, KEYS, BLOCK_M, dout, q, k, v, stats, dq_acc, dq, dk, dv,
                    softmax_scale=softmax_scale, causal=causal, Q_STAGES=q_stages,
                    DO_STAGES=do_stages, DQ_COLS=DQ_CHUNK, CONSUMER_REGS=consumer_regs,
                    LOADER_REGS=loader_regs)
