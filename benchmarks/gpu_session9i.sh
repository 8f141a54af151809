#!/usr/bin/env bash
# Session 9, final tree: the GPU test files (kernels, Gluon forward / backward, FP8,
# decode) in one call. Results -> $OUT/s9i.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
for t in test_gpu test_gpu_hopper test_gpu_fp8 test_decode; do
  timeout 170 python3 -m pytest -q -n 8 -p no:cacheprovider tests/$t.py -m gpu > "$R/$t.txt" 2>&1
  echo "$t: $(tail -1 "$R/$t.txt")"; grep -m3 "^FAILED" "$R/$t.txt"
done
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gpu_hopper_backward.py \
    -k "not grid" > "$R/test_gpu_hopper_backward.txt" 2>&1
echo "test_gpu_hopper_backward: $(tail -1 "$R/test_gpu_hopper_backward.txt")"
grep -m3 "^FAILED" "$R/test_gpu_hopper_backward.txt"
tar -C "$R" -cf "$OUT/s9i.tar" .
