"""Per-call latency from Python (eager, no CUDA graph): direct launches vs ``fn[grid]``.

    python -m bench.eager_latency --dlmc DIR [--calls 2000]

A small layer (GPU time a few microseconds), so the host path dominates: the mean wall time
of back-to-back calls, with the direct launcher on and off, against dense ``torch.matmul``.
"""
from __future__ import annotations

import argparse
import time

import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from bench.dlmc_bench import find_matrix
from sparsert_triton.dlmc import read_smtx


def per_call_us(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - t) / calls


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args(argv)
    w = read_smtx(find_matrix(a.dlmc, "rn50", "0.9", "bottleneck_1_block_group1_1_1")).with_values(seed=0)
    Wd = w.to_dense(torch.float32).cuda()
    for N in (196, 3136):
        X = torch.randn(w.K, N, device="cuda")
        print(f"{w.M}x{w.K}x{N}: dense torch.matmul {per_call_us(lambda: Wd @ X, a.calls):.1f} us/call")
        for s in (Schedule(mode="table"), Schedule(mode="values")):
            k = sparse_kernel(lambda W, X: W @ X, schedule=s).specialize(w)
            k(X)
            direct = per_call_us(lambda: k(X), a.calls)
            for v in k._variants.values():
                v.launcher.enabled = False
            plain = per_call_us(lambda: k(X), a.calls)
            print(f"  {s.mode:6s}: direct {direct:.1f} us/call, fn[grid] {plain:.1f} us/call")


if __name__ == "__main__":
    main()
