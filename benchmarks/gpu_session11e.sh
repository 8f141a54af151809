#!/usr/bin/env bash
# Session 11, call e: suite_order_probe.py (the suite's d64 1k causal forward vs grad_probe's).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
cd benchmarks && timeout 150 python3 suite_order_probe.py --rounds 3 2>&1 | tail -12 | tee "$OUT/probe.txt"
