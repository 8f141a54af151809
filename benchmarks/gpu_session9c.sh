#!/usr/bin/env bash
# Session 9: where the Gluon FP8 d128 forward's time goes (Nsight Compute, one 8k launch:
# stall reasons per issued instruction and SASS-level stall samples), and the forward's
# size threshold (Gluon vs Triton kernel at 512 / 1k tokens). Results -> $OUT/s9c.tar.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
ncu --version | tail -1
timeout 240 ncu --clock-control none -k regex:_fwd_kernel --launch-skip 1 --launch-count 1 \
    --set full --import-source no -o "$R/fp8_d128" \
    python3 benchmarks/one_forward.py --kernel gluon --fp8 > "$R/ncu_run.txt" 2>&1
tail -2 "$R/ncu_run.txt"
ncu -i "$R/fp8_d128.ncu-rep" --page details --print-details all > "$R/ncu_details.txt" 2>&1
grep -E "Duration|Issue Slots Busy|No Eligible|Eligible Warps|Warp Cycles Per Issued|Stall|MUFU|Tensor" \
    "$R/ncu_details.txt" | head -40
ncu -i "$R/fp8_d128.ncu-rep" --page raw --csv \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
    > "$R/ncu_stalls.csv" 2>&1
python3 - "$R/ncu_stalls.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = [i for i, r in enumerate(rows) if r and r[0] == "ID"]
if head:
    names, vals = rows[head[0]], rows[head[0] + 2]
    pairs = [(float(v), n.split("stalled_")[1].split("_per")[0]) for n, v in zip(names, vals)
             if "stalled_" in n and v.replace(".", "", 1).isdigit()]
    for v, n in sorted(pairs, reverse=True)[:12]:
        print(f"{n:28s} {v:6.2f}")
else:
    print(open(sys.argv[1]).read()[:2000])
PY
ncu -i "$R/fp8_d128.ncu-rep" --page source --csv --print-source sass > "$R/ncu_sass.csv" 2>&1
head -c 600 "$R/ncu_sass.csv"; echo; wc -l "$R/ncu_sass.csv"
T=flashtile/kernels/forward_hopper.py
timeout 100 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes 16bit \
    --seqlens 512 1024 2048 --versions gluon=$T > "$R/versions_small.txt" 2>&1
tail -8 "$R/versions_small.txt"
tar -C "$R" -cf "$OUT/s9c.tar" .
