"""The main demo: specialise a real DLMC matrix, show its kernel, check it, time it on a GPU.

    python -m sparsert_triton.demo [path/to/matrix.smtx.gz] [--n N] [--mode values|indices|table]

Without a CUDA GPU it runs on the CPU through Triton's interpreter (small N).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "bottleneck_2_block_group1_1_1.smtx.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("matrix", nargs="?", default=str(BUNDLED), help="a DLMC .smtx(.gz) file")
    ap.add_argument("--n", type=int, default=None, help="columns of X (default 3136 on a GPU, 64 on CPU)")
    ap.add_argument("--mode", default="values", choices=["values", "indices", "table"])
    ap.add_argument("--lines", type=int, default=40, help="lines of generated source to print")
    args = ap.parse_args(argv)

    import torch
    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"   # before triton is imported
    from dsl import Schedule, relu
    from sparsert_triton import sparse_kernel
    from sparsert_triton.dlmc import read_smtx
    from sparsert_triton.testing import assert_matches

    device = "cuda" if gpu else "cpu"
    pattern = read_smtx(args.matrix)
    weight = pattern.with_values(seed=0)
    N = args.n or (3136 if gpu else 64)
    print(f"matrix {Path(args.matrix).name}: {weight.M} x {weight.K}, nnz {weight.nnz} "
          f"({100 * (1 - weight.density):.1f}% sparse), N = {N}, device {device}"
          + ("" if gpu else " (Triton interpreter)"))

    @sparse_kernel(schedule=Schedule(mode=args.mode))
    def layer(W, X, bias):
        return relu(W @ X + bias)

    k = layer.specialize(weight)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(weight.K, N, generator=g).to(device)
    bias = torch.randn(weight.M, generator=g).to(device)
    Y = k(X, bias)
    print(f"plan: {k.last_plan.to_schedule()!r}")
    src = k.source.splitlines()
    print(f"--- generated Triton source ({len(src)} lines), first {args.lines} ---")
    print("\n".join(src[:args.lines]))
    print("---")
    ref = k.reference(X, bias)
    assert_matches(Y, ref, weight.to_dense(), X, "float32")
    err = (Y.double().cpu() - ref).abs().max().item()
    print(f"check vs float64 torch.matmul: max abs error {err:.2e}  OK")
    if gpu:
        import triton.testing
        Wd = weight.to_dense(torch.float32).to(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        t_sparse = triton.testing.do_bench(lambda: k(X, bias), return_mode="median")
        t_dense = triton.testing.do_bench(lambda: torch.relu(Wd @ X + bias[:, None]),
                                          return_mode="median")
        print(f"time: sparse {1e3 * t_sparse:.1f} us, dense fp32 (TF32 off) {1e3 * t_dense:.1f} us, "
              f"speedup {t_dense / t_sparse:.2f}x")
    else:
        print("no CUDA GPU: timing skipped (run on a GPU to compare with dense cuBLAS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
