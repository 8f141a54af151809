"""FlashAttention-3-style backward for Hopper (sm_90), written in Gluon.

The Triton backward (`backward.py`) spends 7 matmuls per (query tile, key tile) pair
across two kernels, because a fused dQ needs the dS tile staged in shared memory,
which Triton does not let us place. Here one CTA owns KEYS = 128 keys of one
(batch, KV head): K and V stay in shared memory while a TMA loader warp streams
64-query tiles of Q, dO and the row statistics (LSE in log2 units, Delta) of every
query head of the GQA group through a ring of shared-memory slots. Two consumer
warpgroups own 64 keys each and do the 5 matmuls of FlashAttention-2/3:

    S^T = K_w Q^T, dP^T = V_w dO^T     (async wgmma, keys as rows; dP^T runs under
                                        the exp2 of P^T)
    P^T = exp2(S^T c - lse2),  dS^T = P^T (dP^T - Delta)
    dV_w += P^T dO,  dK_w += dS^T Q     (P^T, dS^T as register operands)
    dS^T -> shared memory; both warpgroups meet on an mbarrier, then
    dQ[:, half w] = dS K[:, half w]     (staged in shared memory, then added into an
                                        fp32 buffer by the copy engine's reduce-add;
                                        d64: the warpgroups take turns, dQ = dS K)

Scope (`supports`): dense (B, S, H, D) fp16 / bf16 at head dim 64, 128 or 256 (the latter
in backward_hopper_d256.py) on sm_90, causal or full attention, no softcap / ALiBi /
dropout, not deterministic (the reduce-adds make dQ's summation order vary from run to
run).

Measured (H200, NOTES.md session 7): with per-thread atomic adds (red.global.v2.f32) in
place of the copy engine's reduce-add the kernel ran at 394 TFLOP/s, at 605 without
the adds.
"""

from __future__ import annotations


import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from . import backward_hopper_d256
from .common import TMA_MIN_FLOPS
from .hopper_common import (dense_call_ok, launch_backward, query_band, reduce_dq,
                            store_dkdv, tile_coords)
from .launcher import CachedKernel


@gluon.jit
def _loader(q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem,
            kv_bar, full, empty, Stats, stats_len, num_heads, b, hk, n0, kv_group, m_begin, n_m):
    """Producer warp: K and V once, then the query tiles into the ring: Q and dO by TMA,
    the tile's LSE / Delta rows by plain loads (128 floats; a 1-D TMA box of them would
    need a rank-1 NVMMA layout to be read back). A slot is refilled once both consumers
    arrived on its `empty` barrier."""
    STAGES: gl.constexpr = q_smem.shape[0]
    BLOCK_M: gl.constexpr = q_smem.shape[2]
    st_layout: gl.constexpr = gl.BlockedLayout([BLOCK_M // 32], [32], [1], [0])
    cols = gl.arange(0, BLOCK_M, layout=st_layout)
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [b, n0, hk, 0], kv_bar, k_smem)
    tma.async_copy_global_to_shared(v_desc, [b, n0, hk, 0], kv_bar, v_smem)
    for t in range(kv_group * n_m):
        m, h = tile_coords(t, n_m, m_begin, hk, kv_group, BLOCK_M)
        slot = t % STAGES
        mbarrier.wait(empty.index(slot), ((t // STAGES) & 1) ^ 1, pred=t >= STAGES)
        st = Stats + ((b * num_heads + h) * 2 * stats_len + m).to(gl.int64) + cols
        lse_smem.index(slot).store(gl.load(st))
        delta_smem.index(slot).store(gl.load(st + stats_len))
        gl.thread_barrier()  # the whole warp's stores before the arrive below releases them
        bar = full.index(slot)
        mbarrier.expect(bar, 2 * q_desc.block_type.nbytes)  # (an arrive, with the TMA bytes)
        tma.async_copy_global_to_shared(q_desc, [b, m, h, 0], bar, q_smem.index(slot))
        tma.async_copy_global_to_shared(do_desc, [b, m, h, 0], bar, do_smem.index(slot))


@gluon.jit
def _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar,
              full, empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked,
              seqlen_q, seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh,
              WG: gl.constexpr):
    """Consumer warpgroup WG: keys n0 + [64 WG, 64 WG + 64) of the CTA, all query tiles.
    Query i sees key j iff j <= i + diag (causal; diag = seqlen_k otherwise): only the
    first n_masked tiles of each head's band need that mask."""
    dtype: gl.constexpr = q_smem.dtype
    STAGES: gl.constexpr = q_smem.shape[0]
    BLOCK_M: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    KEYS: gl.constexpr = k_smem.shape[1]
    ROWS: gl.constexpr = KEYS // 2  # keys per warpgroup
    # dQ's split between the warpgroups, both over all 128 keys (both halves of dS^T:
    # they meet on ds_bar). d128: each takes half of dQ's columns. d64 (a 32-column slice
    # of K's 128-byte swizzled rows gave a wrong dQ on the H200): they take turns, a
    # whole tile each; adding each warpgroup's 64-key dQ separately doubled the fp32
    # reduce-add traffic, which is what limits these kernels (NOTES.md session 8).
    DQ_COLS: gl.constexpr = dq_smem.shape[4]
    TURNS: gl.constexpr = DQ_COLS == HEAD_DIM
    DQ_COL0: gl.constexpr = 0 if TURNS else WG * DQ_COLS
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, DQ_COLS, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout,
                                                  k_width=2)
    col_layout: gl.constexpr = gl.SliceLayout(0, s_layout)

    k_all = k_smem.reshape([KEYS, HEAD_DIM])
    k_w = k_all.slice(WG * ROWS, ROWS, dim=0)
    v_w = v_smem.reshape([KEYS, HEAD_DIM]).slice(WG * ROWS, ROWS, dim=0)
    k_cols = k_all.slice(DQ_COL0, DQ_COLS, dim=1)  # dQ's B operand (d128)
    keys = n0 + WG * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, s_layout))
    dk = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=acc_layout)
    dv = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=acc_layout)
    s_zero = gl.zeros([ROWS, BLOCK_M], gl.float32, layout=s_layout)
    dq_zero = gl.zeros([BLOCK_M, DQ_COLS], gl.float32, layout=dq_layout)
    cols_m = gl.arange(0, BLOCK_M, layout=col_layout)
    dq_buf = dq_smem.index(WG)
    mbarrier.wait(kv_bar, 0)

    for t in range(kv_group * n_m):
        m, h = tile_coords(t, n_m, m_begin, hk, kv_group, BLOCK_M)
        slot = t % STAGES
        mbarrier.wait(full.index(slot), (t // STAGES) & 1)
        q = q_smem.index(slot).reshape([BLOCK_M, HEAD_DIM])
        do = do_smem.index(slot).reshape([BLOCK_M, HEAD_DIM])
        s_t = warpgroup_mma(k_w, q.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp_t = warpgroup_mma(v_w, do.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        lse2 = lse_smem.index(slot).load(col_layout)  # LSE in log2 units
        s_t = warpgroup_mma_wait(1, deps=[s_t])
        p_t = gl.exp2(s_t * qk_scale - lse2[None, :])
        if t % n_m < n_masked:  # near the diagonal: keys past i + diag get P = 0
            p_t = gl.where(keys[:, None] <= (m + cols_m)[None, :] + diag, p_t, 0.0)
        delta = delta_smem.index(slot).load(col_layout)
        dp_t = warpgroup_mma_wait(0, deps=[dp_t])
        ds_t = p_t * (dp_t - delta[None, :])
        p_op = gl.convert_layout(p_t.to(dtype), op_layout)
        ds_op = gl.convert_layout(ds_t.to(dtype), op_layout)
        dv = warpgroup_mma(p_op, do, dv, is_async=True)
        dk = warpgroup_mma(ds_op, q, dk, is_async=True)

        # dS^T to shared memory, then this warpgroup's share of dQ = dS K.
        ds_buf = ds_smem.index(t % 2)
        ds_own = ds_buf.slice(WG * ROWS, ROWS, dim=0)
        ds_own.store(ds_t.to(dtype))
        fence_async_shared()  # the wgmma (async proxy) reads what this proxy wrote
        mbarrier.arrive(ds_bar.index(t % 2), count=1)
        if TURNS:
            if t % 2 == WG:
                mbarrier.wait(ds_bar.index(t % 2), (t // 2) & 1)
                dq = warpgroup_mma(ds_buf.permute((1, 0)), k_cols, dq_zero, use_acc=False,
                                   is_async=True)
                dq = warpgroup_mma_wait(0, deps=[dq])
                tma.store_wait(0)  # this warpgroup's previous reduce-add has read dq_buf
                reduce_dq(dq, dq_buf, dq_desc, b, m, h, DQ_COL0, grad_scale)
            dv, dk, p_op, ds_op = warpgroup_mma_wait(0, deps=[dv, dk, p_op, ds_op])
            mbarrier.arrive(empty.index(slot), count=1)  # Q / dO of this slot used
        else:
            mbarrier.wait(ds_bar.index(t % 2), (t // 2) & 1)
            dq = warpgroup_mma(ds_buf.permute((1, 0)), k_cols, dq_zero, use_acc=False,
                               is_async=True)
            dq, dv, dk, p_op, ds_op = warpgroup_mma_wait(0, deps=[dq, dv, dk, p_op, ds_op])
            mbarrier.arrive(empty.index(slot), count=1)
            tma.store_wait(0)  # the previous tile's reduce-add has read dq_buf
            reduce_dq(dq, dq_buf, dq_desc, b, m, h, DQ_COL0, grad_scale)
    tma.store_wait(0)

    store_dkdv(DK, DV, dk, dv, n0 + WG * ROWS, 0, b, hk, seqlen_k, grad_scale, stride_kb,
               stride_ks, stride_kh, acc_layout)


# The two warpgroups' entry points: WG must be a compile-time constant (it picks
# shared-memory slices), and warp_specialize passes partitions runtime values only.
@gluon.jit
def _consumer0(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar,
               full, empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked,
               seqlen_q, seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh):
    _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar,
              full, empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked,
              seqlen_q, seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh, 0)


@gluon.jit
def _consumer1(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar,
               full, empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked,
               seqlen_q, seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh):
    _consumer(q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar,
              full, empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked,
              seqlen_q, seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh, 1)


@gluon.jit
def _bwd_kernel(q_desc, do_desc, k_desc, v_desc, dq_desc, DK, DV, Stats, stats_len,
                stride_kb, stride_ks, stride_kh, num_heads, kv_heads, seqlen_q, seqlen_k,
                qk_scale, grad_scale,
                CAUSAL: gl.constexpr, STAGES: gl.constexpr, DQ_COLS: gl.constexpr,
                CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr):
    """One CTA = KEYS keys of one (batch, KV head): a producer warp and two consumer
    warpgroups (this kernel's 4 warps and a 4-warp worker). dK / dV (B, Sk, Hk, D)
    share strides (the host makes them alike)."""
    dtype: gl.constexpr = q_desc.dtype
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[1]
    KEYS: gl.constexpr = k_desc.block_type.shape[1]
    pid_n = gl.program_id(0)
    bhk = gl.program_id(1) + gl.program_id(2) * gl.num_programs(1)  # batch_head_grid
    b = bhk // kv_heads
    hk = bhk % kv_heads
    kv_group = num_heads // kv_heads
    n0 = pid_n * KEYS

    diag, m_begin, n_m, n_masked = query_band(n0, seqlen_q, seqlen_k, KEYS, BLOCK_M, CAUSAL)

    q_smem = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape,
                                        do_desc.layout)
    st_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])  # per slot: [BLOCK_M]
    lse_smem = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], st_layout)
    delta_smem = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], st_layout)
    k_smem = gl.allocate_shared_memory(dtype, k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, v_desc.block_type.shape, v_desc.layout)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([KEYS, BLOCK_M], dtype)
    ds_smem = gl.allocate_shared_memory(dtype, [2, KEYS, BLOCK_M], ds_layout)
    dq_shape: gl.constexpr = [2, 1, BLOCK_M, 1, DQ_COLS]
    dq_smem = gl.allocate_shared_memory(gl.float32, dq_shape, dq_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    ds_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrive per consumer warpgroup
    for i in gl.static_range(2):
        mbarrier.init(ds_bar.index(i), count=2)

    args = (q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem, ds_smem, dq_smem, kv_bar, full,
            empty, ds_bar, DK, DV, dq_desc, b, hk, n0, kv_group, m_begin, n_m, n_masked, seqlen_q,
            seqlen_k, diag, qk_scale, grad_scale, stride_kb, stride_ks, stride_kh)
    gl.warp_specialize([
        (_consumer0, args),
        (_consumer1, args),
        (_loader, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, lse_smem,
                   delta_smem, kv_bar, full, empty, Stats, stats_len, num_heads, b, hk, n0,
                   kv_group, m_begin, n_m)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


_bwd_launch = CachedKernel(_bwd_kernel)


# head dim -> (ring slots, consumer / loader registers); 128 keys and 64-query tiles.
CONFIGS = {64: (2, 240, 24), 128: (2, 240, 24)}
KEYS = 128
BLOCK_M = 64
# Below this the call is host-bound (see forward_hopper.MIN_FLOPS). With the launch cache
# and direct descriptors (session 10) the Gluon backward wins from there: d64 / d128 1k
# causal x 16 241 / 289 vs 209 / 234 TFLOP/s (H200); at 1e11 (before) they had tied. At
# d256 the Triton backward is so much slower that the Gluon one wins from 1k tokens x 8
# heads causal (228 vs 152).
MIN_FLOPS = TMA_MIN_FLOPS
MIN_FLOPS_D256 = 1e10


def supports(q, k, v, dout, *, softmax_scale, window_left, window_right, softcap,
             alibi_slopes, dropout_p, deterministic) -> bool:
    """True when this kernel can run the call: see the module doc for the scope."""
    if deterministic or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if q.shape[-1] not in CONFIGS and q.shape[-1] != 256:
        return False
    return dense_call_ok(q, k, (q, k, v, dout), softmax_scale=softmax_scale,
                         window_left=window_left, window_right=window_right, softcap=softcap,
                         alibi_slopes=alibi_slopes, dropout_p=dropout_p,
                         min_flops=MIN_FLOPS_D256 if q.shape[-1] == 256 else MIN_FLOPS)


def row_stats(lse: torch.Tensor) -> torch.Tensor:
    """The buffer the kernel reads its row statistics from, for a (B, H, S) LSE:
    (B, H, 2, S rounded up to BLOCK_M) fp32, [LSE * log2(e) (+inf where LSE = -inf, so
    P = 0 there), Delta], rows past S zero. Filled by `backward.hopper_row_stats`."""
    batch, heads, seqlen = lse.shape
    return torch.empty((batch, heads, 2, -(-seqlen // BLOCK_M) * BLOCK_M),
                       dtype=torch.float32, device=lse.device)


def dq_buffer(q: torch.Tensor) -> torch.Tensor:
    """The fp32 buffer (q's shape, contiguous) the kernel adds dQ into, uninitialised:
    `backward.hopper_row_stats` zeroes it in the launch that computes the row statistics
    (a memset of its own cost as much; NOTES.md session 12)."""
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)


def attention_backward(dout, q, k, v, stats, dq_acc, dq, dk, dv, *, softmax_scale: float,
                       causal: bool):
    """Fill dq, dk, dv (B, S, H, D; dk and dv with equal strides) for a call `supports`
    accepted; stats from `row_stats` with Delta filled in, dq_acc a zeroed `dq_buffer`."""
    if q.shape[-1] == 256:
        return backward_hopper_d256.attention_backward(
            dout, q, k, v, stats, dq_acc, dq, dk, dv, softmax_scale=softmax_scale,
            causal=causal)
    head_dim = q.shape[-1]
    stages, consumer_regs, loader_regs = CONFIGS[head_dim]
    launch_backward(_bwd_launch, KEYS, BLOCK_M, dout, q, k, v, stats, dq_acc, dq, dk, dv,
                    softmax_scale=softmax_scale, causal=causal, STAGES=stages,
                    DQ_COLS=head_dim if head_dim <= 64 else head_dim // 2,
                    CONSUMER_REGS=consumer_regs, LOADER_REGS=loader_regs)
