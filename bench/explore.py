"""Schedule exploration on the GPU: time many schedules of a few DLMC matrices.

    python -m bench.explore --dlmc DIR --out results.csv [--deadline-s 400]

Prints one line per (matrix, schedule): cold compile seconds, CUDA-graph median microseconds,
speedup over dense fp32 (TF32 off), and relative error against float64.
"""
from __future__ import annotations

import argparse
import csv
import time

import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from bench.dlmc_bench import find_matrix
from sparsert_triton.dlmc import read_smtx

S = Schedule
# (model, sparsity, name, N, [schedules])
PLAN = [
    # run 7: unrolled code with column slices (split_k: each row group's columns cut into
    # slices, one program each, partial sums fixed up by the last slice) where a layer has few
    # row groups and few column tiles, so one program per (group, tile) leaves SMs idle
    (model, sp, name, N, [S(mode="table")] + [
        S(mode="values", rows_per_program=16, block_n=64, num_warps=2, split_k=k,
          max_statements_per_function=16384, max_functions_per_kernel=12)
        for k in (1, 2, 4, 8)])
    for model, sp, name, N in (
        ("rn50", "0.9", "bottleneck_1_block_group2_1_1", 784),
        ("rn50", "0.9", "bottleneck_1_block_group3_1_1", 196),
        ("transformer", "0.95", "body_decoder_layer_0_self_attention_multihead_attention_q_fully_connected", 64),
    )
]


def bench_us(fn):
    import triton.testing
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline-s", type=float, default=400)
    ap.add_argument("--only", default="", help="substring filter on the matrix name")
    a = ap.parse_args(argv)
    t_end = time.time() + a.deadline_s
    torch.backends.cuda.matmul.allow_tf32 = False
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "sparsity", "matrix", "M", "K", "N", "nnz", "schedule", "compile_s",
                     "median_us", "dense_us", "speedup", "rel_err"])
        for model, sp, name, N, scheds in PLAN:
            if a.only and a.only not in name:
                continue
            wt = read_smtx(find_matrix(a.dlmc, model, sp, name)).with_values(seed=0)
            X = torch.randn(wt.K, N, device="cuda")
            Wd = wt.to_dense(torch.float32).cuda()
            dense = bench_us(lambda: torch.matmul(Wd, X))
            ref = wt.to_dense().cuda() @ X.double()
            print(f"== {model} {sp} {name} {wt.M}x{wt.K}x{N} nnz={wt.nnz} dense fp32 {dense:.1f} us", flush=True)
            for s in scheds:
                if time.time() > t_end:
                    print("deadline reached")
                    break
                k = sparse_kernel(lambda W, X: W @ X, schedule=s).specialize(wt)
                t0 = time.time()
                try:
                    Y = k(X)
                    torch.cuda.synchronize()
                except Exception as e:  # report and continue with the next schedule
                    print(f"  {s!r}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                cs = time.time() - t0
                err = ((Y.double() - ref).norm() / ref.norm()).item()
                us = bench_us(lambda: k(X))
                w.writerow([model, sp, name, wt.M, wt.K, N, wt.nnz, repr(s), f"{cs:.2f}",
                            f"{us:.2f}", f"{dense:.2f}", f"{dense / us:.3f}", f"{err:.2e}"])
                f.flush()
                print(f"  {us:8.2f} us  x{dense / us:5.2f}  compile {cs:6.1f}s  err {err:.1e}  {s!r}", flush=True)


if __name__ == "__main__":
    main()
