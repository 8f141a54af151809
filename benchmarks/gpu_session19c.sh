#!/usr/bin/env bash
# Session 19, call c: the two bigmem tests alone (they ran out of memory beside 14 xdist
# workers in call a), then two more --quick suite runs on the H100, so that the committed
# H100 suite is a per-case median of three runs (run 1: gpu_session17b.sh, this session).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 -m pytest -q -p no:cacheprovider -m "gpu and bigmem" tests > "$R/gpu_tests_bigmem.log" 2>&1
tail -1 "$R/gpu_tests_bigmem.log"; grep -E "^FAILED" "$R/gpu_tests_bigmem.log" | head -4
for i in 2 3; do
  timeout 232 python3 -m flashtile bench --suite --quick --headdim 64 128 256 --no-plot \
      --out "$R/run$i" --budget-s 212 > "$R/suite_log$i.txt" 2>&1
  rm -f "$R/run$i"/*.png; ls "$R/run$i"
done
