"""Plots for exploring masks, schedules and benchmark results (matplotlib, imported lazily).

Every function draws on ``ax`` (a new figure when ``ax`` is None) and returns the Axes, so
plots compose into subplots and save with ``ax.figure.savefig(path)``. Nothing here needs a
display (matplotlib falls back to its Agg backend when there is none).

Weights may be anything :func:`sparsert_triton.as_sparse_weight` accepts, or a DLMC
``SmtxPattern`` (values do not matter for these plots).

* :func:`spy` -- the mask (nonzero positions); large matrices are shown as a density image.
* :func:`row_length_hist` -- the distribution of nonzeros per row.
* :func:`row_groups` -- which program computes which row under a plan.
* :func:`speedup_chart` -- speedup of one system over baselines against sparsity.
* :func:`roofline` -- achieved GFLOP/s against arithmetic intensity, with the two roofs.
* :func:`read_results` -- load a benchmark CSV into a list of dicts with numbers parsed.
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from .weights import SparseWeight, as_sparse_weight

#: Numeric columns of the benchmark CSV (``bench/results/*.csv``).
NUMERIC_COLUMNS = ("sparsity", "M", "K", "N", "nnz", "median_us", "eager_us", "compile_s")
#: Bytes per element of each dtype named in the CSV.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
#: H100 SXM: fp32 FMA (non-tensor-core) peak in GFLOP/s and HBM3 bandwidth in GB/s.
H100_FP32_GFLOPS = 67_000.0
H100_HBM_GBS = 3_350.0

# ------------------------------------------------------------------ helpers


def _plt():
    """Import pyplot (matplotlib picks Agg by itself when there is no display)."""
    import matplotlib.pyplot as plt
    return plt


def _axes(ax, figsize=(6, 4)):
    if ax is not None:
        return ax
    fig, ax = _plt().subplots(figsize=figsize)
    return ax


def as_weight(weight) -> SparseWeight:
    """A :class:`SparseWeight` for any accepted weight or a DLMC pattern (values drawn)."""
    if isinstance(weight, SparseWeight):
        return weight
    if hasattr(weight, "with_values") and hasattr(weight, "indptr"):   # SmtxPattern
        return weight.with_values(0)
    return as_sparse_weight(weight)


def _rows_of_nonzeros(w: SparseWeight) -> np.ndarray:
    return np.repeat(np.arange(w.M), w.row_nnz)


# ------------------------------------------------------------------ masks


def spy(weight, ax=None, max_pixels: int = 1024, title: Optional[str] = None):
    """Draw the mask of ``weight``: nonzeros dark. Matrices wider or taller than
    ``max_pixels`` are binned and each pixel shows the density of its bin."""
    w = as_weight(weight)
    ax = _axes(ax)
    rows, cols = _rows_of_nonzeros(w), w.indices
    fm, fk = -(-w.M // max_pixels), -(-w.K // max_pixels)   # rows, columns per pixel
    bm, bk = -(-w.M // fm), -(-w.K // fk)
    img = np.zeros(bm * bk)
    np.add.at(img, (rows // fm) * bk + cols // fk, 1.0)
    img = img.reshape(bm, bk) / (fm * fk)
    label = "density per bin" if fm * fk > 1 else None
    im = ax.imshow(img, cmap="Greys", vmin=0.0, vmax=max(1e-12, img.max()) if label else 1.0,
                   aspect="auto", interpolation="nearest",
                   extent=(-0.5, bk * fk - 0.5, bm * fm - 0.5, -0.5))
    if label:
        ax.figure.colorbar(im, ax=ax, label=label)
    ax.set_xlabel(f"column (K = {w.K})")
    ax.set_ylabel(f"row (M = {w.M})")
    ax.set_title(title or f"mask: {w.M} x {w.K}, nnz {w.nnz} "
                          f"({100 * (1 - w.density):.1f}% sparse)")
    return ax


def row_length_hist(weight, ax=None, bins: Union[int, str] = "auto", title: Optional[str] = None):
    """Histogram of nonzeros per row, with the mean marked."""
    w = as_weight(weight)
    ax = _axes(ax)
    lengths = w.row_nnz
    ax.hist(lengths, bins=bins, color="tab:blue", edgecolor="white")
    mean = float(lengths.mean()) if lengths.size else 0.0
    ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
    ax.set_xlabel("nonzeros per row")
    ax.set_ylabel("rows")
    ax.set_title(title or f"row lengths: min {lengths.min()}, max {lengths.max()}")
    ax.legend()
    return ax


def row_group_of(weight, plan) -> np.ndarray:
    """``group[r]``: the index of the program (row group) that computes row ``r``.

    Groups are consecutive runs of ``plan.rows_per_program`` rows of
    :func:`sparsert_triton.compiler.specialise.row_order` (the specialiser may launch them in
    another order; the partition of rows is the same)."""
    from .compiler.specialise import row_order
    w = as_weight(weight)
    order = row_order(w, plan)
    group = np.empty(w.M, np.int64)
    group[order] = np.arange(w.M) // plan.rows_per_program
    return group


def row_groups(weight, plan, ax=None, max_columns: int = 1024, title: Optional[str] = None):
    """The mask with each nonzero coloured by the program that computes its row.

    The image holds the group index of each nonzero's row (zeros are masked out); a band of
    width ``max(1, K // 40)`` at the left shows the group of every row, empty rows included.
    Columns are binned when ``K > max_columns``."""
    plt = _plt()
    from matplotlib.colors import ListedColormap
    w = as_weight(weight)
    group = row_group_of(w, plan)
    G = int(group.max()) + 1 if group.size else 1
    ax = _axes(ax)
    kb = min(w.K, max_columns)
    band = max(1, kb // 40)
    img = np.full((w.M, band + 1 + kb), np.nan)
    img[:, :band] = group[:, None]
    rows = _rows_of_nonzeros(w)
    img[rows, band + 1 + (w.indices * kb) // w.K] = group[rows]
    base = plt.get_cmap("tab20").colors
    cmap = ListedColormap([base[i % len(base)] for i in range(G)]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=-0.5, vmax=G - 0.5, aspect="auto",
              interpolation="nearest")
    ax.axvline(band + 0.5, color="black", linewidth=0.8)
    ax.set_xlabel("group band | column" + (f" (binned to {kb})" if kb < w.K else ""))
    ax.set_ylabel("row")
    ax.set_title(title or f"{G} programs of {plan.rows_per_program} rows "
                          f"({plan.mode}, row_order={plan.row_order})")
    return ax


# ------------------------------------------------------------------ results


def read_results(path) -> list:
    """Rows of a benchmark CSV as dicts; numeric columns parsed (empty cells become None)."""
    with open(Path(path), newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for c in NUMERIC_COLUMNS:
            if c in r:
                r[c] = float(r[c]) if r[c] not in ("", None) else None
    return rows


def _num(r: dict, c: str) -> float:
    v = r[c]
    return float(v) if v not in ("", None) else math.nan


def _case(r: dict) -> tuple:
    """One benchmark case: the same matrix name recurs across models and sparsities."""
    return (r.get("model", ""), r["matrix"], _num(r, "sparsity"), int(_num(r, "N")),
            r.get("dtype", ""))


def speedups(rows: Iterable[dict], system: str = "sparsert", baseline: str = "dense") -> list:
    """``(sparsity, baseline_us / system_us, case)`` for every case timed for both systems."""
    times = defaultdict(dict)
    sparsity = {}
    for r in rows:
        times[_case(r)][r["system"]] = _num(r, "median_us")
        sparsity[_case(r)] = _num(r, "sparsity")
    out = []
    for case, t in times.items():
        if system in t and baseline in t and t[system] > 0:
            out.append((sparsity[case], t[baseline] / t[system], case))
    return out


def speedup_chart(rows: Iterable[dict], system: str = "sparsert",
                  baselines: Union[str, Sequence[str]] = ("dense", "cusparse"), ax=None,
                  title: Optional[str] = None):
    """Speedup of ``system`` over each baseline against sparsity: one point per case
    (matrix, N, dtype), and the geometric mean per sparsity level as a line."""
    rows = list(rows)
    baselines = [baselines] if isinstance(baselines, str) else list(baselines)
    ax = _axes(ax, figsize=(7, 4.5))
    colors = _plt().get_cmap("tab10").colors
    for i, base in enumerate(baselines):
        pts = speedups(rows, system, base)
        if not pts:
            continue
        s = np.array([p[0] for p in pts])
        x = np.array([p[1] for p in pts])
        c = colors[i % len(colors)]
        ax.scatter(100 * s, x, s=12, alpha=0.5, color=c)
        levels = np.unique(np.round(s, 3))
        geo = [math.exp(np.log(x[np.round(s, 3) == lv]).mean()) for lv in levels]
        ax.plot(100 * levels, geo, "-o", color=c, label=f"vs {base} (geomean)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel(f"speedup of {system} (x)")
    ax.set_title(title or f"{system} speedup against sparsity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax


def intensity_and_rate(r: dict) -> tuple:
    """(FLOP per byte, GFLOP/s) of one measurement, counting useful work only.

    FLOPs = 2 nnz N (the multiply-adds of the nonzeros, for every system, so rates are
    comparable); bytes = the minimum traffic: each nonzero value once, X (K x N) read once,
    Y (M x N) written once, in the row's dtype."""
    e = DTYPE_BYTES.get(r.get("dtype", "float32"), 4)
    M, K, N, nnz = (_num(r, c) for c in ("M", "K", "N", "nnz"))
    flops = 2.0 * nnz * N
    moved = e * (nnz + K * N + M * N)
    return flops / moved, flops / (_num(r, "median_us") * 1e-6) / 1e9


def roofline(rows: Iterable[dict], systems: Optional[Sequence[str]] = None,
             peak_gflops: float = H100_FP32_GFLOPS, peak_gbs: float = H100_HBM_GBS, ax=None,
             title: Optional[str] = None):
    """Achieved GFLOP/s against arithmetic intensity (see :func:`intensity_and_rate`) for each
    system, under the roofs ``min(peak_gflops, peak_gbs * intensity)`` (log-log). Defaults:
    H100 SXM fp32 FMA peak and HBM bandwidth."""
    rows = list(rows)
    systems = list(systems) if systems is not None else sorted({r["system"] for r in rows})
    ax = _axes(ax, figsize=(7, 4.5))
    colors = _plt().get_cmap("tab10").colors
    all_i = []
    for i, name in enumerate(systems):
        pts = [intensity_and_rate(r) for r in rows if r["system"] == name]
        pts = [p for p in pts if all(map(math.isfinite, p)) and p[0] > 0 and p[1] > 0]
        if not pts:
            continue
        ii, gf = zip(*pts)
        all_i += ii
        ax.scatter(ii, gf, s=12, alpha=0.6, color=colors[i % len(colors)], label=name)
    lo = min(all_i) / 2 if all_i else 0.1
    hi = max(max(all_i) * 2 if all_i else 100.0, 2 * peak_gflops / peak_gbs)
    xs = np.geomspace(lo, hi, 200)
    ax.plot(xs, np.minimum(peak_gflops, peak_gbs * xs), color="black", linewidth=1.2,
            label=f"roof: {peak_gflops / 1000:.0f} TFLOP/s, {peak_gbs / 1000:.2f} TB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (useful FLOP / minimum byte)")
    ax.set_ylabel("achieved GFLOP/s (useful)")
    ax.set_title(title or "roofline")
    ax.legend(fontsize="small")
    return ax
