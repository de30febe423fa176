"""Compile time against nnz for the unrolled modes (runs on the CPU; no GPU needed).

    python -m bench.compile_time [--nnz 500,1000,2000,4000] [--M 256 --K 1024]
        [--modes values,indices] [--rows-per-program 8] [--dtype float32]
        [--out bench/results/compile_time.csv]

For each size a random M x K mask with about ``nnz`` nonzeros is specialised, generated
(``gen_s``: specialise + lower + render + store + import) and compiled ahead of time for an
sm_90 target with ``sparsert_triton.compiler.compile.precompile_variant`` (``compile_s``, one
core, kernels in sequence), through the trimmed pipeline of
``sparsert_triton.compiler.fastpasses`` ("fast") and/or Triton's own ("full"). ``statements`` counts the straight-line statements (nnz FMAs + X-row loads), the
quantity compile time is linear in; the script prints the least-squares fit
``compile_s = a + b * statements`` that ``sparsert_triton.tune`` uses to prune
(``COMPILE_S_PER_STATEMENT``). A fresh cache folder is used unless ``--cache-dir`` is given.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ["pipeline", "mode", "M", "K", "nnz", "rows_per_program", "statements", "kernels", "gen_s",
           "compile_s", "ms_per_statement"]
DTYPES = ("bfloat16", "float16", "float32")


def random_weight(M: int, K: int, nnz: int, dtype: str, seed: int = 0):
    import numpy as np
    from sparsert_triton.weights import from_csr_arrays
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(M * K, size=min(nnz, M * K), replace=False))
    rows, cols = flat // K, flat % K
    indptr = np.zeros(M + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=M), out=indptr[1:])
    vals = rng.standard_normal(flat.size).astype(np.float32)
    return from_csr_arrays(M, K, indptr, cols, vals, dtype)


def measure(mode: str, M: int, K: int, nnz: int, rows_per_program: int, dtype: str,
            block_n: int = 128, num_warps: int = 4, pipeline: str = "fast") -> dict:
    import torch
    from dsl import Schedule
    from sparsert_triton import sparse_kernel
    from sparsert_triton.compiler.compile import precompile_variant
    from sparsert_triton.compiler.plan import Signature
    from sparsert_triton.compiler.specialise import specialise

    @sparse_kernel(schedule=Schedule(mode=mode, rows_per_program=rows_per_program, block_n=block_n,
                                     num_warps=num_warps))
    def plain(W, X):
        return W @ X

    w = random_weight(M, K, nnz, dtype)
    k = plain.specialize(w)
    plan = k.plan(1024, dtype)
    layout = specialise(w, plan)
    statements = sum(p.statements for g in layout.groups for p in g.parts)
    t0 = time.perf_counter()
    sig = Signature(dtype, dtype, dtype, ())
    v = k.variant(sig, 1024, torch.device("cpu"))
    t1 = time.perf_counter()
    compiled = precompile_variant(v, sig, fast=pipeline == "fast")
    t2 = time.perf_counter()
    return {"pipeline": pipeline, "mode": mode, "M": M, "K": K, "nnz": w.nnz,
            "rows_per_program": rows_per_program,
            "statements": statements, "kernels": len(compiled), "gen_s": round(t1 - t0, 3),
            "compile_s": round(t2 - t1, 3), "ms_per_statement": round(1e3 * (t2 - t1) / statements, 3)}


def fit(rows) -> tuple:
    """Least squares ``compile_s = a + b * statements``: (a seconds, b seconds per statement)."""
    import numpy as np
    x = np.array([r["statements"] for r in rows], float)
    y = np.array([r["compile_s"] for r in rows], float)
    if len(rows) < 2 or np.ptp(x) == 0:
        return 0.0, float(y.sum() / max(1.0, x.sum()))
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.compile_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nnz", default="500,1000,2000,4000")
    ap.add_argument("--M", type=int, default=256)
    ap.add_argument("--K", type=int, default=1024)
    ap.add_argument("--modes", default="values,indices")
    ap.add_argument("--rows-per-program", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=DTYPES)
    ap.add_argument("--out", default="bench/results/compile_time.csv")
    ap.add_argument("--cache-dir", help="sparsert cache (default: a fresh temporary folder)")
    ap.add_argument("--pipelines", default="fast",
                    help="comma list: fast (sparsert_triton.compiler.fastpasses), "
                         "full (Triton's own)")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.nnz.split(",") if s]
    modes = a.modes.split(",")
    for m in modes:
        if m not in ("values", "indices"):
            ap.error(f"--modes: {m!r} is not an unrolled mode (values, indices)")
    if any(n < 1 or n > a.M * a.K for n in sizes):
        ap.error(f"--nnz values must be in 1..M*K = {a.M * a.K}")
    os.environ.pop("TRITON_INTERPRET", None)        # compile for real (sm_90 target)
    os.environ["SPARSERT_CACHE_DIR"] = a.cache_dir or tempfile.mkdtemp(prefix="sparsert-compile-")
    rows = []
    print(f"{'pipeline':8} {'mode':8} {'nnz':>7} {'stmts':>7} {'kernels':>7} {'gen_s':>7} {'compile_s':>9} {'ms/stmt':>8}")
    for pipeline, mode, n in itertools.product(a.pipelines.split(","), modes, sizes):
        r = measure(mode, a.M, a.K, n, a.rows_per_program, a.dtype, pipeline=pipeline)
        rows.append(r)
        print(f"{r['pipeline']:8} {r['mode']:8} {r['nnz']:7d} {r['statements']:7d} "
              f"{r['kernels']:7d} {r['gen_s']:7.2f} {r['compile_s']:9.2f} "
              f"{r['ms_per_statement']:8.3f}", flush=True)
    for pipeline in a.pipelines.split(","):
        for mode in modes:
            sel = [r for r in rows if r["mode"] == mode and r["pipeline"] == pipeline]
            a0, b = fit(sel)
            print(f"fit {pipeline} {mode}: compile_s = {a0:.2f} + {1e3 * b:.3f} ms x statements")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
