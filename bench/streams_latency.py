"""What launching an unrolled variant's kernels side by side (``streams``) costs and buys.

    python -m bench.streams_latency [--M 256 --K 512 --N 1024 --density 0.1] [--out FILE]

One random W (M x K at ``density``) in ``values`` mode, cut into many kernels (8 rows per
program, 4 functions per kernel), called with ``streams`` = 1 (in sequence) and 8 (side by
side). Per setting: the host time to enqueue one call from Python (``host_us``, the eager
path's cost when the GPU keeps up), the eager time per call with the GPU included
(``eager_us``) and the CUDA-graph median (``graph_us``, GPU time only). Every call's result is
checked against float64 first.
"""
from __future__ import annotations

import argparse
import time

import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel

COLUMNS = ["M", "K", "N", "density", "streams", "kernels", "host_us", "eager_us", "graph_us"]


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _graph_us(call) -> float:
    import triton
    return 1e3 * triton.testing.do_bench_cudagraph(call, rep=50, return_mode="median")


def measure(M=256, K=512, N=1024, density=0.1, streams=(1, 8), device="cuda", calls=200,
            graph_timer=_graph_us) -> list:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    X = torch.randn(K, N, generator=g).to(device)
    ref = W.double() @ X.double().cpu()
    rows = []
    for s in streams:
        k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(
            mode="values", rows_per_program=8, max_functions_per_kernel=4, streams=s)).specialize(W)
        Y = k(X)
        _sync(device)
        torch.testing.assert_close(Y.double().cpu(), ref, rtol=1e-4, atol=1e-4)
        for _ in range(min(calls, 20)):
            k(X)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            k(X)
        t1 = time.perf_counter()
        _sync(device)
        t2 = time.perf_counter()
        rows.append(dict(M=M, K=K, N=N, density=density, streams=s, kernels=len(k._last.kernels),
                         host_us=f"{(t1 - t0) / calls * 1e6:.1f}",
                         eager_us=f"{(t2 - t0) / calls * 1e6:.1f}",
                         graph_us=f"{graph_timer(lambda: k(X)):.1f}"))
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("M", 256), ("K", 512), ("N", 1024)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    from bench.timing import require_cuda
    require_cuda()
    rows = measure(a.M, a.K, a.N, a.density)
    if a.out:
        from bench.report import write_rows
        write_rows(a.out, COLUMNS, rows)


if __name__ == "__main__":      # parallel compile workers re-import this module: guard it
    main()
