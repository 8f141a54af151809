#!/usr/bin/env bash
# Session 16, call b: call a showed V's transpose kernel at 28-32 us (torch's copy 258-268)
# but, at d256 4k causal, a call timed at 427 us around a 284 us attention kernel: the
# rest looks like host time. This call adds the host's microseconds per call, the
# kernel-only TFLOP/s, and a cProfile of that case (transpose now via CachedKernel).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
(cd benchmarks && timeout 300 python3 fp8_overhead.py --out "$R" > "$R/fp8_overhead.txt" 2>&1)
tail -22 "$R/fp8_overhead.txt"
head -45 "$R/host_profile_fp8_d256_4k_causal.txt" | tail -32
