"""The main demo: specialise a real DLMC matrix, show its kernel, check it, time it on a GPU.

    python -m sparsert_triton.demo [path/to/matrix.smtx.gz] [--n N] [--mode values|indices|table]

Without a CUDA GPU it runs on the CPU through Triton's interpreter (small N).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "bottleneck_2_block_group1_1_1.smtx.gz"

#: What the bundled file is (it is rn50/magnitude_pruning/0.9/ of the DLMC set)
BUNDLED_ABOUT = ("the mask of a real pruned layer from the Deep Learning Matrix Collection "
                 "(DLMC): ResNet-50's first 3x3 convolution (bottleneck block 1 of group 1, 64 "
                 "-> 64 channels), its 64 x 64 x 3 x 3 weight flattened to 64 x 576, magnitude-"
                 "pruned to 90%")

#: DLMC ResNet-50 layer names -> the kind of layer they are
RN50_KINDS = (("bottleneck_2", "a 3x3 convolution"), ("bottleneck_1", "a 1x1 convolution"),
              ("bottleneck_3", "a 1x1 convolution"), ("bottleneck_projection", "a 1x1 convolution"),
              ("final_dense", "the classifier"), ("initial_conv", "the 7x7 input convolution"))


def about(path: Path) -> str:
    """What a DLMC pattern file holds, from its name and (DLMC layout) its folders."""
    if path.resolve() == BUNDLED:
        return BUNDLED_ABOUT
    name = re.sub(r"\.smtx(\.gz)?$", "", path.name)
    kind = next((k for prefix, k in RN50_KINDS if name.startswith(prefix)), None)
    parts = path.resolve().parts
    level = next((p for p in reversed(parts[:-1]) if re.fullmatch(r"0?\.\d+", p)), None)
    method = next((p.replace("_", " ") for p in parts if p.endswith(("pruning", "dropout"))), None)
    text = f"the mask of layer {name}" + (f" ({kind} of ResNet-50)" if kind else "")
    if level:
        text += f", pruned to {100 * float(level):g}%" + (f" ({method})" if method else "")
    return text


def excerpt(source: str, lines: int) -> str:
    """The first ``lines`` lines of the first function that does the product (a row group's
    unrolled code, or the table kernel), decorator included."""
    src = source.splitlines()
    start = next((i for i, line in enumerate(src)
                  if line.startswith("def ") and not line.startswith(("def _epilogue", "def _gelu"))),
                 0)
    start -= start > 0 and src[start - 1].startswith("@")
    return "\n".join(src[start:start + lines])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("matrix", nargs="?", default=str(BUNDLED), help="a DLMC .smtx(.gz) file")
    ap.add_argument("--n", type=int, default=None, help="columns of X (default 3136 on a GPU, 64 on CPU)")
    ap.add_argument("--mode", default="values", choices=["values", "indices", "table"])
    ap.add_argument("--lines", type=int, default=24, help="lines of generated source to print")
    args = ap.parse_args(argv)

    import torch
    gpu = torch.cuda.is_available()
    if not gpu and os.environ.get("TRITON_INTERPRET") != "1":
        # the interpreter must be on before triton is imported; `python -m
        # sparsert_triton.demo` has imported it with the package: start again with it on
        os.environ["TRITON_INTERPRET"] = "1"
        if "triton" in sys.modules:
            os.execv(sys.executable, [sys.executable, "-m", "sparsert_triton.demo",
                                      *(sys.argv[1:] if argv is None else argv)])
    from dsl import Schedule, relu
    from sparsert_triton import sparse_kernel
    from sparsert_triton.dlmc import read_smtx

    device = "cuda" if gpu else "cpu"
    path = Path(args.matrix)
    weight = read_smtx(path).with_values(seed=0)
    N = args.n or (3136 if gpu else 64)
    print(textwrap.fill(f"{path.name}: {about(path)}. The file holds the mask only: the "
                        f"{weight.nnz} nonzero values are random draws from N(0, 1) (seed 0).",
                        width=96, initial_indent="matrix   ", subsequent_indent=" " * 9))

    @sparse_kernel(schedule=Schedule(mode=args.mode))
    def layer(W, X, bias):
        return relu(W @ X + bias)

    k = layer.specialize(weight)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(weight.K, N, generator=g).to(device)
    bias = torch.randn(weight.M, generator=g).to(device)
    print(f"call     Y = relu(W @ X + bias), X: {weight.K} x {N} float32, on "
          + ("the GPU" if gpu else "the CPU (Triton interpreter)"))
    Y = k(X, bias)
    print(k.summary())
    src = k.source
    print(f"--- generated Triton source: {len(src.splitlines())} lines, {len(src) / 1024:.0f} KiB; "
          f"the first {args.lines} lines of its first function ---")
    print(excerpt(src, args.lines))
    print("--- (" + ("x<i>: a row of X, loaded once; a<r>: the accumulator of the group's row r; "
                     "the literals are the weights" if args.mode == "values" else
                     "see docs/usage.md for the modes") + ")")
    ref = k.reference(X, bias)           # float64 torch on the masked dense weight
    err = (Y.double().cpu() - ref).abs()
    bound = 2e-5 * (1 + weight.to_dense().abs() @ X.double().cpu().abs() + ref.abs())
    ok = bool((err <= bound).all())
    print(f"check    against float64 torch.matmul: max abs error {err.max().item():.2e}  "
          + ("OK" if ok else "FAILED (over 2e-5 x (1 + |W| |X| + |Y|))"))
    if gpu:
        import triton.testing
        Wd = weight.to_dense(torch.float32).to(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        t_sparse = triton.testing.do_bench(lambda: k(X, bias), return_mode="median")
        t_dense = triton.testing.do_bench(lambda: torch.relu(Wd @ X + bias[:, None]),
                                          return_mode="median")
        print(f"time     sparse {1e3 * t_sparse:.1f} us, dense fp32 (TF32 off) {1e3 * t_dense:.1f} us, "
              f"speedup {t_dense / t_sparse:.2f}x")
    else:
        print("time     skipped: no CUDA GPU (run on a GPU to compare with dense cuBLAS)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
