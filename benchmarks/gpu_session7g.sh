#!/usr/bin/env bash
# Session 7: causal Gluon backward launched heads-fastest (longest key blocks first) vs key
# blocks fastest, d128 8k; GPU tests; then Nsight Compute on one d128 8k backward (where the
# time goes: tensor pipe, shared-memory traffic, stall reasons). Results -> $OUT/s7g.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/gluon_bwd_ablate.py --out "$R" --seqlen 8192 \
    --variants real kv_fastest 2>&1 | tail -5
timeout 280 python3 -m pytest -q -x tests/test_gpu_hopper_backward.py > "$R/test_bwd.txt" 2>&1
tail -2 "$R/test_bwd.txt"; grep -m3 -A30 "Error\|FAILED\|assert" "$R/test_bwd.txt" | head -40
timeout 150 ncu --clock-control none -k regex:_bwd_kernel --launch-skip 1 --launch-count 1 \
    --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__cycles_elapsed.avg \
    python3 benchmarks/one_forward.py --backward > "$R/ncu_bwd.txt" 2>&1
grep -E "Duration|Issue Slots Busy|No Eligible|Stall|Warp Cycles Per Issued|Shared|gmma|wavefronts|Compute \(SM\)|Memory Throughput|cycles_elapsed|L2 Cache Throughput|DRAM Throughput" "$R/ncu_bwd.txt" | head -30
tar -C "$R" -cf "$OUT/s7g.tar" .
