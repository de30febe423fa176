"""Run a few representative sparse kernels once each, for ``ncu`` to read their counters.

    ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section Occupancy --section WarpStateStats -k regex:sparse \
        python -m bench.profile_kernels --dlmc DIR [--conv]

``--conv`` runs the direct sparse 3x3 convolution kernels instead (``CONV_CASES``: DLMC
ResNet-50 layer ``bottleneck_2_block_group2_1_1`` at 90%, 128 -> 128 channels, 28 x 28,
batch 8): the padded-input table kernel and three unrolled forms (``scripts/gpu_ncu.sh`` reads
their warp stall reasons).

Each kernel is compiled and run once before the profiled launch (``--launch-skip`` is not
needed: ncu profiles every matching launch; the first is the compile run, ignore it).
"""
from __future__ import annotations

import argparse

import torch

from dsl import Schedule as S
from sparsert_triton import sparse_kernel
from bench.dlmc_bench import find_matrix
from sparsert_triton.dlmc import read_smtx

CASES = [
    # (model, sparsity, matrix, N, schedule): the suite's main kernels on its largest layer
    ("transformer", "0.95", "body_decoder_layer_0_ffn_conv1_fully_connected", 2048,
     S(mode="table", rows_per_program=1, block_n=128, chunk=4)),
    ("rn50", "0.9", "bottleneck_1_block_group1_1_1", 3136,
     S(mode="values", rows_per_program=32, block_n=128)),
]


CONV_CASES = [
    # (sparsity, layer, batch, H, schedule) on a 128-channel layer at batch 8: the padded-input
    # table kernel (45-48 us), the unrolled 32-row groups on 4 warps x 128 columns (29.4 us)
    # and on 16 warps x 512 columns (25.3 us), and 16-row groups on 16 warps (26.7 us): every
    # unrolled form measured within 25-30 us whatever its grid (52 to 3328 warps), so what
    # holds them is not the SM count; the 256-channel layer builds its unrolled form in ~1
    # minute, so it is not among them
    ("0.9", "bottleneck_2_block_group2_1_1", 8, 28,
     S(mode="table", chunk=8, prefetch_tail=True, pad_input=True)),
] + [("0.9", "bottleneck_2_block_group2_1_1", 8, 28,
      S(mode="values", rows_per_program=R, block_n=bn, num_warps=w, pad_input=True,
        max_statements_per_function=16384, max_functions_per_kernel=8))
     for R, bn, w in ((32, 128, 4), (32, 512, 16), (16, 512, 16))] + [
    # the 16-warp form again with tap pointers (no padded copy): do its off-image lanes'
    # zero-buffer reads cost L1 wavefronts?
    ("0.9", "bottleneck_2_block_group2_1_1", 8, 28,
     S(mode="values", rows_per_program=32, block_n=512, num_warps=16, tap_pointers=True,
       max_statements_per_function=16384, max_functions_per_kernel=8))]


#: The same layer's unrolled 32-row groups on grids that a per-SM instruction-fetch limit
#: would tell apart (ninth session, bench/NOTES.md): 16 warps x 512 columns (52 programs,
#: 25.4 us), 8 warps x 256 (100 programs, 27.3 us), two column slices of half the code each
#: (104 programs, 27.3 us), and 8-row groups (~27 KB of code each, 208 programs, 28.3 us)
FETCH_CASES = [("0.9", "bottleneck_2_block_group2_1_1", 8, 28,
                S(mode="values", rows_per_program=R, block_n=bn, num_warps=w, split_k=k,
                  pad_input=True, max_statements_per_function=16384,
                  max_functions_per_kernel=8))
               for R, bn, w, k in ((32, 512, 16, 1), (32, 256, 8, 1), (32, 512, 16, 2),
                                   (8, 512, 16, 1))]


def run_conv(dlmc, cases=None):
    from bench.conv_bench import layer_kernel
    for sp, name, B, H, s in CONV_CASES if cases is None else cases:
        p = read_smtx(find_matrix(dlmc, "rn50", sp, name)).with_values(seed=0)
        C_in = p.K // 9
        X = torch.randn(B, C_in, H, H, device="cuda")
        k = layer_kernel(p, C_in, 1, s)
        for _ in range(2):
            k(X)
            torch.cuda.synchronize()
        print(f"conv {sp} {name} {p.M}x{C_in}x3x3 {B}x{H}x{H} {k.last_plan.to_schedule()!r}",
              flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--conv", action="store_true", help="profile the convolution kernels")
    ap.add_argument("--fetch", action="store_true",
                    help="profile the unrolled convolution grids of FETCH_CASES")
    a = ap.parse_args(argv)
    if a.conv or a.fetch:
        return run_conv(a.dlmc, FETCH_CASES if a.fetch else None)
    for model, sp, name, N, s in CASES:
        wt = read_smtx(find_matrix(a.dlmc, model, sp, name)).with_values(seed=0)
        X = torch.randn(wt.K, N, device="cuda")
        k = sparse_kernel(lambda W, X: W @ X, schedule=s).specialize(wt)
        k(X)
        torch.cuda.synchronize()
        k(X)
        torch.cuda.synchronize()
        print(f"{model} {sp} {name} {wt.M}x{wt.K}x{N} nnz={wt.nnz} {s!r}", flush=True)


if __name__ == "__main__":
    main()
