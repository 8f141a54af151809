#!/usr/bin/env bash
# Session 14, first call: the two scripts prepared in session 13, the quick probe first.
set -u
bash benchmarks/gpu_session14b.sh
bash benchmarks/gpu_session14a.sh
