"""Schedule exploration on the GPU: time many schedules of a few DLMC matrices.

    python -m bench.explore --dlmc DIR --out results.csv [--deadline-s 400]

Prints one line per (matrix, schedule): cold compile seconds, CUDA-graph median microseconds
(from run 8 over copies of X rotated past L2, as bench/timing.py; runs 1-7 with X in L2),
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
    # run 9: the W @ X few-programs default (chunks of 16, the prefetched tail, X rows a chunk
    # ahead; from run 8, explore_h100_run8_prefetch_x.csv) against the previous default on
    # every DLMC per-shape GEMM case at 90% whose plan it changes (14 of 38)
    (model, "0.9", name, N, [S(), S(prefetch_x=False)])
    for model, name, N in (
        ("rn50", "bottleneck_1_block_group2_1_1", 784),
        ("rn50", "bottleneck_1_block_group3_1_1", 196),
        ("rn50", "bottleneck_1_block_group4_1_1", 49),
        ("rn50", "bottleneck_1_block_group4_1_1", 392),
        ("rn50", "bottleneck_1_block_group_projection_block_group3", 784),
        ("rn50", "bottleneck_1_block_group_projection_block_group4", 196),
        ("rn50", "bottleneck_3_block_group3_1_1", 196),
        ("rn50", "bottleneck_3_block_group4_1_1", 49),
        ("rn50", "bottleneck_projection_block_group_projection_block_group3", 196),
        ("rn50", "bottleneck_projection_block_group_projection_block_group4", 49),
        ("rn50", "final_dense", 1),
        ("rn50", "final_dense", 8),
        ("transformer",
         "body_decoder_layer_0_encdec_attention_multihead_attention_k_fully_connected", 256),
        ("transformer", "body_decoder_layer_0_ffn_conv2_fully_connected", 256),
    )
]


def bench_us(fn, X=None, nbytes=0):
    """CUDA-graph median of ``fn(X)`` over copies of X rotated past L2 (bench/timing.py) when
    ``X`` is given (run 8 on); of ``fn()`` with X left in L2 otherwise (runs 1-7)."""
    if X is not None:
        from bench.timing import time_system
        return time_system(lambda x: (lambda: fn(x)), X, nbytes).median_us
    import triton.testing
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline-s", type=float, default=400)
    ap.add_argument("--only", default="", help="substring filter on the matrix name")
    ap.add_argument("--sparsity", default="",
                    help="run the plan's matrices at this DLMC sparsity level instead (e.g. 0.8)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="W and X dtype (dense in the same dtype; fp32 with TF32 off)")
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
            sp = a.sparsity or sp
            dt = getattr(torch, a.dtype)
            wt = read_smtx(find_matrix(a.dlmc, model, sp, name)).with_values(seed=0,
                                                                              dtype=a.dtype)
            X = torch.randn(wt.K, N, device="cuda").to(dt)
            Wd = wt.to_dense(dt).cuda()
            nbytes = X.element_size() * (X.numel() + wt.M * N + wt.nnz)
            dense = bench_us(lambda x: torch.matmul(Wd, x), X, nbytes)
            ref = wt.to_dense().cuda() @ X.double()
            print(f"== {model} {sp} {name} {wt.M}x{wt.K}x{N} nnz={wt.nnz} dense {a.dtype} "
                  f"{dense:.1f} us", flush=True)
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
                us = bench_us(lambda x: k(x), X, nbytes)
                w.writerow([model, sp, name, wt.M, wt.K, N, wt.nnz, repr(s), f"{cs:.2f}",
                            f"{us:.2f}", f"{dense:.2f}", f"{dense / us:.3f}", f"{err:.2e}"])
                f.flush()
                print(f"  {us:8.2f} us  x{dense / us:5.2f}  compile {cs:6.1f}s  err {err:.1e}  {s!r}", flush=True)


if __name__ == "__main__":
    main()
