#!/usr/bin/env bash
# Session 6: Nsight Compute on one d128 8k bf16 forward, Gluon vs Triton kernel: warp
# stall reasons, issue activity, tensor-pipe use. Results -> $OUT/s6h.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
for kern in gluon triton; do
  timeout 200 ncu --clock-control none -k regex:_fwd_kernel --launch-skip 1 --launch-count 1 \
    --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    python3 benchmarks/one_forward.py --kernel $kern > "$R/ncu_$kern.txt" 2>&1
  echo "== $kern"; grep -E "Duration|Issue Slots Busy|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Stall|Warp Cycles Per Issued|SM Busy|Compute \(SM\) Throughput|Registers Per|Block Size|Achieved Occupancy|Waves" "$R/ncu_$kern.txt" | head -30
done
tar -C "$R" -cf "$OUT/s6h.tar" .
