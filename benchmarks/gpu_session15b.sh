#!/usr/bin/env bash
# Session 15, call b (#4 d64 forward, #7 FP8 d128): two schedule options of the Gluon
# forward's consumers, timed against the shipped schedule in one process, then tested.
# (Ran at commit e2ee1d2; the @early / @turns options and the schedule tests were
# reverted after it, so rerunning it needs that commit.)
#   early  O's rescale between the Q K^T and P.V issues (FlashAttention-3's order), so the
#          64 multiplies per thread run while Q K^T is on the tensor cores;
#   turns  the two consumer warpgroups take turns at the softmax (named barriers), so
#          their exp2 work never shares an SM sub-partition's MUFU unit;
#   noexp  diagnostic, WRONG output: P's exp2 dropped (what the MUFU work costs);
#   base2  the shipped schedule again (the run's spread).
# Then this session's GPU tests and the FP8 tests (FP8 d256 has been on the Gluon forward
# by default since session 14 and that dispatch has not run on the GPU), and, if time is
# left, fp8_bench.py against the current bf16 forward.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
START=$SECONDS
R=$OUT/r; mkdir -p "$R"  # at most eight files come back, no tar: a call cut short still returns them
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
N=../flashtile/kernels/forward_hopper.py
V="base=$N early=$N@early turns=$N@turns both=$N@early@turns noexp=$N@noexp base2=$N"
# A turn bug would hang every step below: check them first, drop them if they fail.
if ! timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_hopper.py \
        -k "turns_change_no_bit" > "$R/gpu_tests_turns.log" 2>&1; then
    echo "turns failed:"; tail -5 "$R/gpu_tests_turns.log"
    V="base=$N early=$N@early noexp=$N@noexp base2=$N"
fi
tail -1 "$R/gpu_tests_turns.log"
cd benchmarks
timeout 140 python3 gluon_fwd_versions.py --out "$R" --head-dim 128 --dtypes fp8 \
    --seqlens 4096 16384 --versions $V > "$R/d128_fp8.txt" 2>&1
tail -7 "$R/d128_fp8.txt"
timeout 140 python3 gluon_fwd_versions.py --out "$R" --head-dim 64 --dtypes 16bit \
    --seqlens 4096 16384 --versions $V > "$R/d64_16bit.txt" 2>&1
tail -7 "$R/d64_16bit.txt"
cd ..
timeout 130 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gpu_fp8.py \
    tests/test_gpu_hopper.py -k "fp8 or schedule or turns or 256" > "$R/gpu_tests.log" 2>&1
tail -2 "$R/gpu_tests.log"; grep -E "^(FAILED|ERROR)" "$R/gpu_tests.log" | head -8
LEFT=$((560 - (SECONDS - START)))
echo "seconds left for fp8_bench: $LEFT"
if [ $LEFT -gt 90 ]; then
    (cd benchmarks && timeout $LEFT python3 fp8_bench.py --out "$R" > "$R/fp8_bench.txt" 2>&1)
    tail -14 "$R/fp8_bench.txt"
fi
