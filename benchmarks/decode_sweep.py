"""Decode launch-config and split-count sweep where decode_bench.py found flashtile short.

    python3 benchmarks/decode_sweep.py --out "$OUT" [--budget 200]

Shapes (Sq = 1, 32 query / 8 KV heads, d = 128, bf16, from decode_bench.Case):
B = 1 at 32k and 128k (few (batch, KV head) pairs: the split count and the per-program
memory parallelism decide), B = 64 at 8k and B = 8 at 32k, contiguous and paged (page 16
gathers a page index per key row).
For each: every torch SDPA backend alone (flash, efficient, cuDNN; enable_gqa), then
flashtile over (block_n, warps, stages) x num_splits. Writes decode_sweep.json; prints the
best rows per shape last.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import decode_bench as db
from flashtile.kernels import decode as decode_mod
from flashtile.kernels.config import KernelConfig

SHAPES = [(1, 32768, "contiguous"), (1, 131072, "contiguous"), (64, 8192, "page16"),
          (64, 8192, "contiguous"), (64, 8192, "page256"), (8, 32768, "page16"),
          (8, 32768, "contiguous")]
CONFIGS = [(64, 4, 3), (64, 4, 4), (128, 4, 2), (128, 4, 3), (128, 8, 3)]
SPLITS = {1: [0, 8, 16, 32, 64, 128], 8: [0], 64: [0]}


def sdpa_backend_fn(case, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    which = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    qs = [q.transpose(1, 2) for q in case.q]
    ks = [k.transpose(1, 2) for k in case.k]
    vs = [v.transpose(1, 2) for v in case.v]

    def call(i):
        with sdpa_kernel([which]):
            return sdpa(qs[i], ks[i], vs[i], enable_gqa=True)
    return case.run_all(call)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--budget", type=float, default=200.0)
    args = parser.parse_args(argv)
    copy_gbs = db.copy_bandwidth()
    report = dict(gpu=torch.cuda.get_device_name(), copy_gbs=copy_gbs, rows=[])
    original = decode_mod.decode_config
    cases = {}
    for batch, length, layout in SHAPES:
        if (batch, length) not in cases:
            cases.clear()
            torch.cuda.empty_cache()
            cases[batch, length] = db.Case(batch, length)
        case = cases[batch, length]
        for backend in ("flash", "cudnn") if layout == "contiguous" else ():
            report["rows"].append(db.measure(f"sdpa-{backend}",
                                             lambda: sdpa_backend_fn(case, backend), case,
                                             copy_gbs, layout="contiguous"))
        for block_n, warps, stages in CONFIGS:
            cfg = KernelConfig(16, block_n, warps, stages)
            decode_mod.decode_config = lambda *a, cfg=cfg: cfg
            try:
                for splits in SPLITS[batch]:
                    if db.elapsed() > args.budget:
                        break
                    report["rows"].append(db.measure(
                        f"ft n{block_n} w{warps} s{stages} sp{splits}",
                        lambda: db.flashtile_fn(case, layout, splits), case, copy_gbs,
                        layout=layout, block_n=block_n, num_warps=warps, num_stages=stages,
                        num_splits=splits))
            finally:
                decode_mod.decode_config = original
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "decode_sweep.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"GPU {report['gpu']}, copy {copy_gbs:.0f} GB/s; K/V GB/s (CUDA-graph medians)")
    for batch, length, layout in SHAPES:
        rows = [r for r in report["rows"] if r["batch"] == batch and r["cache_len"] == length
                and "gbs" in r and (r["layout"] == layout or r["method"].startswith("sdpa"))]
        rows.sort(key=lambda r: -r["gbs"])
        sd = [r for r in rows if r["method"].startswith("sdpa")]
        ft = [r for r in rows if r["method"].startswith("ft")]
        print(f"B={batch} L={length} {layout}: "
              + ", ".join(f"{r['method']} {r['gbs']:.0f}" for r in sd))
        for r in ft[:4]:
            print(f"   {r['method']:28s} {r['gbs']:7.0f} ({r['frac_of_copy']:.2f})")
        default = [r for r in ft if r["method"] == "ft n64 w4 s3 sp0"]
        if default:
            print(f"   default n64 w4 s3 sp0        {default[0]['gbs']:7.0f}")


if __name__ == "__main__":
    main()
