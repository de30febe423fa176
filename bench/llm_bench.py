"""LLM decode and prefill shapes: sparse W (M x K, pruned) @ X (K x N) against dense torch.

    python -m bench.llm_bench [--layers llama2-7b] [--n 1,4,16,64] [--sparsity 0.5,0.7,0.9]
                              [--dtype float16] [--mask uniform] [--systems ...] [--out CSV]
    python -m bench.llm_bench --report [--out CSV]      # RESULTS.md section and plot only

Systems, timed in the same process on the same inputs:

* ``dense``: ``torch.matmul`` of the dense (pruned) weight: cuBLAS.
* ``semi24``: torch's 2:4 semi-structured sparse weight (its own 2:4 mask of the same weight,
  50% only, where this torch build runs it).
* ``sparsert_default``: ``Schedule()`` (the heuristic default, no tuning).
* ``sparsert``: the tuner's pick (``sparsert_triton.tune.tune``, ``--tune-budget`` seconds a
  case, its plan store not used), timed like the others; ``compile_s`` is the tuning time.
  The tuner times its candidates without rotating the weight past L2, so on weights that fit
  the L2 its ranking may differ from this benchmark's. On the CPU (smoke test) it is the
  tuner's untimed heuristic.
* ``table``: ``Schedule(mode="table")``: the table kernels' defaults (the one-row kernel, or
  tensor-core blocks of row-group column unions at >= 15% density), the default for these
  shapes before the blocks mode.
* ``expand``: ``Schedule(mode="expand")``: the weight written out as dense tiles once per call,
  then a tensor-core product (the default above 64 columns on these shapes where density x N
  >= 20).

Every result is checked against float64 first (relative Frobenius error under 1e-2 for half
precision; a wrong answer stops the run). Timing: CUDA-graph medians
(``sparsert_triton.runtime.timing.graph_median_us``) over rotated copies of the weight (and
X), enough that one pass over them is twice the 50 MB L2 of an H100, so every call reads its
weight from HBM. Masks: ``uniform`` (each position kept with probability 1 - sparsity) or ``per_row``
(each row keeps the same count, as Wanda / SparseGPT prune).

CSV columns: ``layer,M,K,N,sparsity,mask,dtype,system,median_us,compile_s,schedule``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

from bench.report import read_meta, write_marked

COLUMNS = ["layer", "M", "K", "N", "sparsity", "mask", "dtype", "system", "median_us",
           "compile_s", "schedule"]
#: (M, K) of the linear layers of each model (attention projections, MLP up/gate, MLP down)
LAYERS: Dict[str, Sequence[tuple]] = {
    "llama2-7b": (("attn", 4096, 4096), ("mlp_up", 11008, 4096), ("mlp_down", 4096, 11008)),
    "llama3-8b": (("attn_q", 4096, 4096), ("attn_kv", 1024, 4096), ("mlp_up", 14336, 4096),
                  ("mlp_down", 4096, 14336)),
    "llama2-13b": (("mlp_up", 13824, 5120), ("mlp_down", 5120, 13824)),
    "llama3-70b": (("mlp_up", 28672, 8192), ("mlp_down", 8192, 28672)),
    # encoder widths (BERT-base; the DLMC Transformer's base model), for the smaller weights
    "bert-base": (("attn", 768, 768), ("ffn_up", 3072, 768), ("ffn_down", 768, 3072)),
    "transformer-base": (("attn", 512, 512), ("ffn_up", 2048, 512), ("ffn_down", 512, 2048)),
    "tiny": (("fc", 40, 120),),          # the CPU smoke test's (interpreter)
}
SYSTEMS = ("dense", "semi24", "sparsert_default", "sparsert", "table", "expand")
#: the fixed schedules of the systems that time one (besides the default)
FIXED = {"table": "table", "expand": "expand"}
L2_BYTES = 50e6
RESULTS = Path(__file__).parent / "results"
BEGIN, END = "<!-- llm-bench:begin -->", "<!-- llm-bench:end -->"


def pruned_weight(M: int, K: int, sparsity: float, mask: str, dtype, device, seed: int = 0):
    """A random normal weight with ``sparsity`` of its positions zero (see module doc)."""
    import torch
    g = torch.Generator(device="cpu").manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    if mask == "per_row":
        keep = int(round(K * (1 - sparsity)))
        drop = torch.rand(M, K, generator=g).argsort(dim=1)[:, keep:]
        W.scatter_(1, drop, 0.0)
    elif mask == "uniform":
        W *= torch.rand(M, K, generator=g) >= sparsity
    else:
        raise ValueError(f"mask must be 'uniform' or 'per_row', got {mask!r}")
    return W.to(dtype).to(device)


def copies(nbytes: float) -> int:
    """Copies to rotate so one pass over them is at least twice the L2 (at most 8)."""
    return 1 if nbytes >= 2 * L2_BYTES else int(min(8, 1 + math.ceil(2 * L2_BYTES / nbytes)))


def _rel(Y, ref) -> float:
    return ((Y.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _time(calls) -> float:
    """Median microseconds per call: CUDA-graph replays, or one call's wall time on the CPU
    (the interpreter smoke test times nothing meaningful)."""
    import torch
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        t0 = time.perf_counter()
        calls[0]()
        return (time.perf_counter() - t0) * 1e6
    from sparsert_triton.runtime.timing import graph_median_us
    return graph_median_us(calls, replays=15, target_us=2000)


def _sync(t):
    import torch
    if t.is_cuda:
        torch.cuda.synchronize()


def _sparse_kernels(w, schedule, nbytes: float):
    """A kernel specialised to ``w`` and copies with their own device buffers (the same
    compiled code), enough that one pass over them exceeds the L2 twice."""
    from sparsert_triton import sparse_kernel
    import torch
    from sparsert_triton.weights import TORCH_DTYPES
    k = sparse_kernel(lambda W, X: W @ X).specialize(w, schedule)
    # the copies' values in the weight's own dtype (float64 values would make float64 kernels)
    values = torch.from_numpy(w.values).to(TORCH_DTYPES[w.dtype])
    return [k] + [k.with_values(values) for _ in range(copies(nbytes) - 1)]


def tuned_schedule(w, X, budget_s: float):
    """(schedule, seconds): the tuner's pick for ``W @ X`` (CPU: its heuristic)."""
    from sparsert_triton import sparse_kernel
    from sparsert_triton.tune import tune
    t0 = time.perf_counter()
    s, _ = tune(sparse_kernel(lambda W, X: W @ X), w, X, budget_s=budget_s, progress=False,
                use_cache=False, allow_cpu=True)
    return s, time.perf_counter() - t0


def _sparse_system(ks, X, ref, tol):
    """(median_us, compile_s, plan) of the kernels ``ks`` (one weight, rotated copies)."""
    import torch
    t0 = time.perf_counter()
    Y = ks[0](X)
    _sync(Y)
    compile_s = time.perf_counter() - t0
    err = _rel(Y, ref)
    if not err < tol:
        raise AssertionError(f"{ks[0].schedule!r}: relative error {err:.2e} against float64")
    outs = [torch.empty_like(Y) for _ in ks]
    for k, o in zip(ks, outs):
        k(X, out=o)
    us = _time([lambda k=k, o=o: k(X, out=o) for k, o in zip(ks, outs)])
    return us, compile_s, ks[0].last_plan


def _semi24(W, X, ref_fn, tol):
    import torch
    from torch.sparse import to_sparse_semi_structured
    M, K = W.shape
    w4 = W.reshape(M, K // 4, 4)
    keep = w4.abs().argsort(dim=2)[:, :, 2:]
    m24 = torch.zeros_like(w4, dtype=torch.bool).scatter_(2, keep, True).reshape(M, K)
    dense = W * m24
    S = to_sparse_semi_structured(dense)
    Y = torch.mm(S, X)
    err = _rel(Y, ref_fn(dense))
    if not err < tol:
        raise AssertionError(f"semi24: relative error {err:.2e}")
    n = copies(M * K * 1.125)
    Ss = [S] + [to_sparse_semi_structured(dense.clone()) for _ in range(n - 1)]
    return _time([lambda s=s: torch.mm(s, X) for s in Ss])


def run(layers, ns, sparsities, dtypes, masks, systems, out: Path, log=print,
        device: str = "cuda", tune_budget_s: float = 6.0) -> List[dict]:
    import torch
    from dsl import Schedule
    from sparsert_triton.weights import as_sparse_weight
    rows: List[dict] = []
    for model in layers:
        for name, M, K in LAYERS[model]:
            for dtype_name in dtypes:
                dtype = getattr(torch, dtype_name)
                tol = 1e-2
                for mask in masks:
                    for sp in sparsities:
                        W = pruned_weight(M, K, sp, mask, dtype, device, seed=M + K)
                        w = as_sparse_weight(W)        # once: every system's kernel shares it
                        # rotation past L2 on the GPU only (the CPU smoke test times nothing)
                        rotate = device != "cpu"
                        sparse_bytes = w.nnz * (W.element_size() + 2) if rotate else math.inf
                        kernels = {}
                        Wd = W.double()
                        nd = copies(M * K * W.element_size()) if rotate else 1
                        Ws = [W] + [W.clone() for _ in range(nd - 1)]
                        for N in ns:
                            X = torch.randn(K, N, device=device).to(dtype)
                            ref = Wd @ X.double()
                            base = dict(layer=f"{model}.{name}", M=M, K=K, N=N, sparsity=sp,
                                        mask=mask, dtype=dtype_name)
                            line = f"{model}.{name} {M}x{K} N={N} {sp:.0%} {mask} {dtype_name}:"
                            dense_us = None
                            for system in systems:
                                try:
                                    compile_s, sched = 0.0, ""
                                    if system == "dense":
                                        err = _rel(torch.matmul(W, X), ref)
                                        if not err < tol:
                                            raise AssertionError(f"dense error {err:.2e}")
                                        us = _time([lambda w=w: torch.matmul(w, X) for w in Ws])
                                        dense_us = us
                                    elif system == "semi24":
                                        if sp != 0.5:
                                            continue
                                        us = _semi24(W, X, lambda D: D.double() @ X.double(),
                                                     tol)
                                    elif system == "sparsert":     # tuned for this N
                                        s, tune_s = tuned_schedule(w, X, tune_budget_s)
                                        ks = _sparse_kernels(w, s, sparse_bytes)
                                        us, _, plan = _sparse_system(ks, X, ref, tol)
                                        compile_s, sched = tune_s, repr(plan.to_schedule())
                                        del ks
                                    else:
                                        if system not in kernels:
                                            kernels[system] = _sparse_kernels(
                                                w, Schedule() if system == "sparsert_default"
                                                else Schedule(mode=FIXED[system]),
                                                sparse_bytes)
                                        us, compile_s, plan = _sparse_system(kernels[system], X,
                                                                             ref, tol)
                                        sched = repr(plan.to_schedule())
                                except AssertionError:
                                    raise
                                except Exception as e:   # a system that cannot run this case
                                    log(f"  [{system}] skipped: {type(e).__name__}: "
                                        f"{str(e)[:160]}")
                                    continue
                                rows.append(dict(base, system=system, median_us=round(us, 3),
                                                 compile_s=round(compile_s, 3), schedule=sched))
                                ratio = f" ({dense_us / us:.2f}x)" if dense_us else ""
                                line += f" {system} {us:.1f}{ratio}"
                            log(line)
                            write_csv(out, rows)
    return rows


def write_csv(path: Path, rows: Sequence[dict]):
    from bench.report import write_rows
    write_rows(path, COLUMNS, rows)


def read_csv(path: Path) -> List[dict]:
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["N"], r["M"], r["K"] = int(r["N"]), int(r["M"]), int(r["K"])
        r["sparsity"], r["median_us"] = float(r["sparsity"]), float(r["median_us"])
    return rows


def speedups(rows: Sequence[dict], system: str) -> Dict[tuple, float]:
    """Geomean of dense / system per (N, sparsity, dtype) over the layers and masks."""
    from bench.report import geomean
    dense = {(r["layer"], r["N"], r["sparsity"], r["mask"], r["dtype"]): r["median_us"]
             for r in rows if r["system"] == "dense"}
    groups: Dict[tuple, list] = {}
    for r in rows:
        if r["system"] != system:
            continue
        d = dense.get((r["layer"], r["N"], r["sparsity"], r["mask"], r["dtype"]))
        if d:
            groups.setdefault((r["N"], r["sparsity"], r["dtype"]), []).append(d / r["median_us"])
    return {k: geomean(v) for k, v in sorted(groups.items())}


def device_line(meta: dict) -> str:
    """'Device: <name> (sm_XY), torch A, triton B, <date>.' from a run's meta file."""
    d, v = meta.get("device") or {}, meta.get("versions") or {}
    parts = [f"Device: {d.get('name', 'not recorded')}"
             + (f" ({d['capability']})" if d.get("capability") else "")]
    parts += [f"{k} {v[k]}" for k in ("torch", "triton") if k in v]
    if meta.get("started"):
        parts.append(meta["started"][:10])
    return ", ".join(parts) + "." + (f" Note: {meta['note']}." if meta.get("note") else "")


def markdown(rows: Sequence[dict], csv_name: str, plot_name: str, meta: dict = None) -> str:
    systems = [s for s in SYSTEMS[1:] if any(r["system"] == s for r in rows)]
    table = {s: speedups(rows, s) for s in systems}
    keys = sorted({k for t in table.values() for k in t})
    lines = [BEGIN, "## LLM layer shapes (`bench/llm_bench.py`)", "",
             f"Geomean speedup over dense `torch.matmul` (cuBLAS) per (N, sparsity, dtype), over "
             f"the layers and masks measured; from `{csv_name}`. Plot: `{plot_name}`. "
             + device_line(meta or {}), "",
             "| N | sparsity | dtype | " + " | ".join(systems) + " |",
             "|---|---|---|" + "---|" * len(systems)]
    for k in keys:
        cells = [f"{table[s][k]:.2f}x" if k in table[s] else "" for s in systems]
        lines.append(f"| {k[0]} | {k[1]:.0%} | {k[2]} | " + " | ".join(cells) + " |")
    lines += ["", "Each column is over the cases that system ran; the default against the "
              "others on the cases both ran (geomean of the time ratio, and its worst case):", ""]
    for s in systems:
        if s == "sparsert_default":
            continue
        n, geo, worst = paired(rows, "sparsert_default", s)
        if n:
            lines.append(f"- `sparsert_default` / `{s}`: {geo:.2f}x over {n} cases "
                         f"(worst {worst:.2f}x)")
    lines += ["", END]
    return "\n".join(lines)


def paired(rows: Sequence[dict], a: str, b: str) -> tuple:
    """(cases, geomean, max) of t(a) / t(b) over the cases (layer, N, sparsity, mask, dtype)
    that both systems ran."""
    from bench.report import geomean
    t: Dict[tuple, dict] = {}
    for r in rows:
        key = (r["layer"], r["N"], r["sparsity"], r["mask"], r["dtype"])
        t.setdefault(key, {})[r["system"]] = r["median_us"]
    ratios = [v[a] / v[b] for v in t.values() if a in v and b in v]
    return (len(ratios), geomean(ratios), max(ratios)) if ratios else (0, None, None)


def plot(rows: Sequence[dict], path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sp = speedups(rows, "sparsert_default")
    fig, ax = plt.subplots(figsize=(6, 4))
    for N in sorted({k[0] for k in sp}):
        for dt in sorted({k[2] for k in sp}):
            pts = sorted((k[1], v) for k, v in sp.items() if k[0] == N and k[2] == dt)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"N={N} {dt}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("speedup over dense (geomean)")
    ax.set_title("sparsert default vs cuBLAS, LLM layer shapes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(csv_path: Path, results_dir: Path = RESULTS):
    rows = read_csv(csv_path)
    png = results_dir / "llm_speedup_vs_sparsity.png"
    plot(rows, png)
    write_marked(results_dir / "RESULTS.md",
                 markdown(rows, csv_path.name, png.name, read_meta(csv_path)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="llama2-7b", help="comma list of " + ", ".join(LAYERS))
    p.add_argument("--n", default="1,4,16,64")
    p.add_argument("--sparsity", default="0.5,0.7,0.9")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--mask", default="uniform")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--tune-budget", type=float, default=6.0,
                   help="seconds of tuning per case for the 'sparsert' system")
    p.add_argument("--out", default=str(RESULTS / "llm_h100.csv"))
    p.add_argument("--report", action="store_true", help="only rewrite RESULTS.md and the plot")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.report:
        report(out)
        return
    from bench.timing import require_cuda
    require_cuda()
    layers = a.layers.split(",")
    for m in layers:
        if m not in LAYERS:
            raise SystemExit(f"--layers: unknown model {m!r}; choose from {', '.join(LAYERS)}")
    from bench.dlmc_bench import write_meta
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run(layers, [int(x) for x in a.n.split(",")], [float(x) for x in a.sparsity.split(",")],
        a.dtype.split(","), a.mask.split(","), a.systems.split(","), out,
        log=lambda s: print(s, flush=True), tune_budget_s=a.tune_budget)
    write_meta(out.with_suffix(".meta.json"), vars(a), started=started)


if __name__ == "__main__":
    sys.exit(main())
