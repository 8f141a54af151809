#!/usr/bin/env bash
# Session 9: the tree row reductions again (session9a had them 3-5% slower; ncu in 9c puts
# 14% of the consumer warps' stall samples on the serial row-max chain). A/B with the
# order alternated (tree, base, tree, base) in one process, then ncu on the tree kernel.
# .variants/forward_hopper_tree.py = bdd6243's forward_hopper.py (ping-pong off).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader
B=flashtile/kernels/forward_hopper.py; T=.variants/forward_hopper_tree.py
timeout 150 python3 benchmarks/gluon_fwd_versions.py --out "$R" --dtypes fp8 16bit \
    --seqlens 4096 16384 --versions tree1=$T base1=$B tree2=$T base2=$B \
    > "$R/versions_tree_ab.txt" 2>&1
tail -11 "$R/versions_tree_ab.txt"
cp $B /tmp/fh_base.py; cp $T $B  # this machine's copy only: ncu on the tree kernel
timeout 200 ncu --clock-control none -k regex:_fwd_kernel --launch-skip 1 --launch-count 1 \
    --set full --import-source no -o "$R/fp8_d128_tree" \
    python3 benchmarks/one_forward.py --kernel gluon --fp8 > "$R/ncu_run.txt" 2>&1
tail -1 "$R/ncu_run.txt"
ncu -i "$R/fp8_d128_tree.ncu-rep" --page details --print-details all > "$R/ncu_details_tree.txt" 2>&1
grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Tensor Cycles Active  " \
    "$R/ncu_details_tree.txt" | head -8
ncu -i "$R/fp8_d128_tree.ncu-rep" --page source --csv --print-source sass > "$R/ncu_sass_tree.csv" 2>&1
cp /tmp/fh_base.py $B
tar -C "$R" -cf "$OUT/s9d.tar" .
