"""Predicted speedup of a sparse kernel over the dense product, from measured H100 ratios.

``predicted_speedup(kind, M, K, N, density, dtype, mode)`` returns the ratio
``t_dense / t_sparse`` on an H100 (above 1: the sparse kernel is faster) and the measurement it
comes from. It is read from ``MEASURED``, one table of ratios measured on this project's
benchmarks, each row citing its CSV or notes; nothing here is derived from ``1 / density``.

The model, for one (kind, dense baseline, kernel family, N range):

* Rows ``(kind, baseline, family, n_lo, n_hi, sparsity, ratio, source)``: the geometric mean
  of ``t_dense / t_sparse`` over the benchmark's cases of that N range and sparsity
  (``n_hi`` None: no upper bound). ``baseline`` is the dense product's precision:
  ``float32`` (TF32 off), ``tf32`` (float32 operands, dense on TF32 tensor cores),
  ``float16``, ``bfloat16``.
* N picks the row group whose range holds it; an N outside every measured range takes the
  nearest range's figure, capped at 1.0.
* Between two measured sparsities s0 < s < s1 the sparse kernel's time is taken affine in
  the nonzeros, i.e. ``1 / ratio`` is interpolated linearly in s. (This is never above the
  linear interpolation of the ratio itself, as ``1/ratio`` is averaged harmonically.)
* Below the lowest measured sparsity s0, the sparse time is taken proportional to the
  nonzeros, ``ratio(s) = ratio(s0) * (1 - s0) / (1 - s)``: never above ratio(s0), and
  conservative, as the kernel's fixed costs do not grow with the nonzeros.
* Above the highest measured sparsity, the highest's ratio (sparser runs faster, so this
  underestimates).
* What was not measured borrows a measured figure and says so in ``source``: bfloat16 W @ X
  uses float16's rows; float64, and the blocks and bitmap modes in float32, use float32's
  table-kernel figure capped at 1.0.

``M`` and ``K`` are checked but do not select rows: the measured groups mix shapes (the DLMC
ResNet-50 / Transformer layers, 64 x 256 to 4096 x 1024; the Llama-2-7B MLP weights for the
blocks and bitmap modes). The figures are H100 medians under CUDA graphs; eager calls from
Python add a host cost per layer that these ratios do not include (RESULTS.md, "eager vs
dense").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from dsl.schedule import MODES, ROW_BLOCK_MODES

KINDS = ("matmul", "conv")
DTYPES = ("float32", "float16", "bfloat16", "float64")

# -- sources (each row below cites one) --------------------------------------------------------
DLMC = "bench/results/dlmc_h100.csv, DLMC W @ X, untuned default schedule"
CONV = "bench/results/conv_h100.csv, DLMC ResNet-50 3x3 convolutions, best of a few schedules"
#: the blocks mode's figures where the LLM benchmark does not run it by default: the twelfth
#: session's prototype of the row-block lists on the Llama-2-7B MLP shapes (11008 x 4096 and
#: 4096 x 11008, fp16, uniform masks), the geometric mean of the two shapes' ratios
BLOCKS_SOURCE = "bench/NOTES.md, twelfth session, blocks mode on Llama-2-7B MLP shapes"
BLOCKS_SOURCE_13 = ("bench/NOTES.md, thirteenth session, the blocks mode's default shapes on "
                    "Llama-2-7B MLP shapes (H100)")
#: the default schedule on bench/llm_bench.py's Llama-2-7B MLP shapes (H100, sixteenth
#: session): the rows below that cite it are the geometric mean of the two shapes' ratios,
#: recomputed from the CSV by tests/test_estimate.py
LLM = ("bench/results/llm_h100.csv, default schedule on Llama-2-7B MLP shapes (11008 x 4096, "
       "4096 x 11008), fp16, uniform masks")

Row = Tuple[str, str, str, int, Optional[int], float, float, str]

# DLMC rows: the suite's cases (matrix, N, sparsity) grouped by N range, the ratio
# t(dense) / t(sparsert_default) (for `tf32`: t(dense_tf32) / t(sparsert_default)), geometric
# mean; tests/test_estimate.py recomputes them from the CSV. Family "table": the default
# schedules (the one-row table kernel; unrolled `values` on layers of <= 2048 nonzeros).
DLMC_ROWS: List[Row] = [
    ("matmul", "float32", "table", 1, 16, 0.80, 0.69, DLMC),
    ("matmul", "float32", "table", 1, 16, 0.90, 1.15, DLMC),
    ("matmul", "float32", "table", 1, 16, 0.95, 1.85, DLMC),
    ("matmul", "float32", "table", 1, 16, 0.98, 2.69, DLMC),
    ("matmul", "float32", "table", 17, 256, 0.80, 1.02, DLMC),
    ("matmul", "float32", "table", 17, 256, 0.90, 1.48, DLMC),
    ("matmul", "float32", "table", 17, 256, 0.95, 1.98, DLMC),
    ("matmul", "float32", "table", 17, 256, 0.98, 2.79, DLMC),
    ("matmul", "float32", "table", 257, 1024, 0.80, 1.07, DLMC),
    ("matmul", "float32", "table", 257, 1024, 0.90, 1.58, DLMC),
    ("matmul", "float32", "table", 257, 1024, 0.95, 2.14, DLMC),
    ("matmul", "float32", "table", 257, 1024, 0.98, 2.93, DLMC),
    ("matmul", "float32", "table", 1025, None, 0.80, 0.89, DLMC),
    ("matmul", "float32", "table", 1025, None, 0.90, 1.37, DLMC),
    ("matmul", "float32", "table", 1025, None, 0.95, 1.95, DLMC),
    ("matmul", "float32", "table", 1025, None, 0.98, 2.89, DLMC),
    ("matmul", "tf32", "table", 1, 16, 0.80, 0.37, DLMC),
    ("matmul", "tf32", "table", 1, 16, 0.90, 0.63, DLMC),
    ("matmul", "tf32", "table", 1, 16, 0.95, 1.00, DLMC),
    ("matmul", "tf32", "table", 1, 16, 0.98, 1.44, DLMC),
    ("matmul", "tf32", "table", 17, 256, 0.80, 0.66, DLMC),
    ("matmul", "tf32", "table", 17, 256, 0.90, 0.95, DLMC),
    ("matmul", "tf32", "table", 17, 256, 0.95, 1.21, DLMC),
    ("matmul", "tf32", "table", 17, 256, 0.98, 1.70, DLMC),
    ("matmul", "tf32", "table", 257, 1024, 0.80, 0.49, DLMC),
    ("matmul", "tf32", "table", 257, 1024, 0.90, 0.73, DLMC),
    ("matmul", "tf32", "table", 257, 1024, 0.95, 0.99, DLMC),
    ("matmul", "tf32", "table", 257, 1024, 0.98, 1.35, DLMC),
    ("matmul", "tf32", "table", 1025, None, 0.80, 0.40, DLMC),
    ("matmul", "tf32", "table", 1025, None, 0.90, 0.61, DLMC),
    ("matmul", "tf32", "table", 1025, None, 0.95, 0.82, DLMC),
    ("matmul", "tf32", "table", 1025, None, 0.98, 1.22, DLMC),
    ("matmul", "float16", "table", 1, 16, 0.80, 0.08, DLMC),
    ("matmul", "float16", "table", 1, 16, 0.90, 0.57, DLMC),
    ("matmul", "float16", "table", 1, 16, 0.95, 1.00, DLMC),
    ("matmul", "float16", "table", 1, 16, 0.98, 1.48, DLMC),
    ("matmul", "float16", "table", 17, 256, 0.80, 0.21, DLMC),
    ("matmul", "float16", "table", 17, 256, 0.90, 0.62, DLMC),
    ("matmul", "float16", "table", 17, 256, 0.95, 0.77, DLMC),
    ("matmul", "float16", "table", 17, 256, 0.98, 1.14, DLMC),
    ("matmul", "float16", "table", 257, 1024, 0.80, 0.20, DLMC),
    ("matmul", "float16", "table", 257, 1024, 0.90, 0.39, DLMC),
    ("matmul", "float16", "table", 257, 1024, 0.95, 0.53, DLMC),
    ("matmul", "float16", "table", 257, 1024, 0.98, 0.66, DLMC),
    ("matmul", "float16", "table", 1025, None, 0.80, 0.31, DLMC),
    ("matmul", "float16", "table", 1025, None, 0.90, 0.37, DLMC),
    ("matmul", "float16", "table", 1025, None, 0.95, 0.47, DLMC),
    ("matmul", "float16", "table", 1025, None, 0.98, 0.57, DLMC),
]

# Convolution rows: the 16 layers x 2 batches grouped by N = batch x output positions, the
# ratio t(cudnn) / t(sparsert) (`tf32`: t(cudnn_tf32) / t(sparsert)), geometric mean; measured
# at 90% only. (By batch, as RESULTS.md lists them: fp32 3.57x / 2.57x at batch 1 / 8, fp16
# 1.10x / 0.57x, bf16 1.11x / 0.57x.)
CONV_ROWS: List[Row] = [
    ("conv", "float32", "direct", 1, 256, 0.90, 5.10, CONV),
    ("conv", "float32", "direct", 257, 1024, 0.90, 2.43, CONV),
    ("conv", "float32", "direct", 1025, None, 0.90, 2.49, CONV),
    ("conv", "tf32", "direct", 1, 256, 0.90, 1.73, CONV),
    ("conv", "tf32", "direct", 257, 1024, 0.90, 0.96, CONV),
    ("conv", "tf32", "direct", 1025, None, 0.90, 0.81, CONV),
    ("conv", "float16", "direct", 1, 256, 0.90, 1.10, CONV),
    ("conv", "float16", "direct", 257, 1024, 0.90, 0.81, CONV),
    ("conv", "float16", "direct", 1025, None, 0.90, 0.66, CONV),
    ("conv", "bfloat16", "direct", 1, 256, 0.90, 1.11, CONV),
    ("conv", "bfloat16", "direct", 257, 1024, 0.90, 0.81, CONV),
    ("conv", "bfloat16", "direct", 1025, None, 0.90, 0.66, CONV),
]

# Blocks rows: N = 1, 4, 16, 64 as measured, each standing for the range up to it; ratio
# sqrt(r(11008 x 4096) * r(4096 x 11008)). Where the default schedule takes the blocks mode
# (N <= 4; N = 16 below 15% density) from the LLM benchmark's CSV, elsewhere from the notes.
BLOCKS_ROWS: List[Row] = [
    ("matmul", "float16", "blocks", 1, 1, 0.50, 0.91, LLM),
    ("matmul", "float16", "blocks", 1, 1, 0.70, 1.37, LLM),
    ("matmul", "float16", "blocks", 1, 1, 0.90, 2.89, LLM),
    ("matmul", "float16", "blocks", 2, 4, 0.50, 0.69, LLM),
    ("matmul", "float16", "blocks", 2, 4, 0.70, 1.08, LLM),
    ("matmul", "float16", "blocks", 2, 4, 0.90, 2.13, LLM),
    ("matmul", "float16", "blocks", 5, 16, 0.50, 0.34, BLOCKS_SOURCE_13),
    ("matmul", "float16", "blocks", 5, 16, 0.70, 0.52, BLOCKS_SOURCE_13),
    ("matmul", "float16", "blocks", 5, 16, 0.90, 0.79, LLM),
    ("matmul", "float16", "blocks", 17, 64, 0.90, 0.41, BLOCKS_SOURCE),
]

# Bitmap rows: N = 1, 4, 16, 64 as measured, each standing for the range up to it. Where the
# default schedule takes the bitmap mode (N = 16 from 15% density, N = 17-64) from the LLM
# benchmark's CSV; elsewhere the bitmap mode's default tiles on 11008 x 4096 alone (fp16,
# uniform masks, H100, CUDA-graph medians with the weight rotated past L2).
BITMAP_SOURCE = ("bench/NOTES.md, fifteenth session, the bitmap mode's default tiles on "
                 "11008 x 4096 (H100)")
BITMAP_ROWS: List[Row] = [
    ("matmul", "float16", "bitmap", 1, 1, 0.50, 0.61, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 1, 1, 0.70, 0.73, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 1, 1, 0.90, 0.85, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 2, 4, 0.50, 0.55, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 2, 4, 0.70, 0.73, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 2, 4, 0.90, 0.79, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 5, 16, 0.50, 0.55, LLM),
    ("matmul", "float16", "bitmap", 5, 16, 0.70, 0.71, LLM),
    ("matmul", "float16", "bitmap", 5, 16, 0.90, 0.76, BITMAP_SOURCE),
    ("matmul", "float16", "bitmap", 17, 64, 0.50, 0.30, LLM),
    ("matmul", "float16", "bitmap", 17, 64, 0.70, 0.33, LLM),
    ("matmul", "float16", "bitmap", 17, 64, 0.90, 0.36, LLM),
]

# Expand rows: N = 128, 256, 512, 2048 as measured, each standing for the range up to it (from
# 65 columns, where the default leaves the bitmap mode); where the default took the expand mode
# (density x N >= 20 then), from the LLM benchmark's CSV (seventeenth session); 90% at N = 128,
# which the default has taken the expand mode for since the nineteenth session (density x N >=
# 12), from that session's probe of the mode's default tiles on 4096 x 4096.
EXPAND_SOURCE = ("bench/NOTES.md, nineteenth session, the expand mode's default tiles on "
                 "4096 x 4096 at N = 128 (H100)")
EXPAND_ROWS: List[Row] = [
    ("matmul", "float16", "expand", 65, 128, 0.50, 0.30, LLM),
    ("matmul", "float16", "expand", 65, 128, 0.70, 0.31, LLM),
    ("matmul", "float16", "expand", 65, 128, 0.90, 0.34, EXPAND_SOURCE),
    ("matmul", "float16", "expand", 129, 256, 0.50, 0.30, LLM),
    ("matmul", "float16", "expand", 129, 256, 0.60, 0.31, LLM),
    ("matmul", "float16", "expand", 129, 256, 0.70, 0.32, LLM),
    ("matmul", "float16", "expand", 129, 256, 0.80, 0.33, LLM),
    ("matmul", "float16", "expand", 129, 256, 0.90, 0.33, LLM),
    ("matmul", "float16", "expand", 257, 512, 0.50, 0.38, LLM),
    ("matmul", "float16", "expand", 257, 512, 0.70, 0.39, LLM),
    ("matmul", "float16", "expand", 257, 512, 0.90, 0.39, LLM),
    ("matmul", "float16", "expand", 513, 2048, 0.50, 0.71, LLM),
    ("matmul", "float16", "expand", 513, 2048, 0.70, 0.72, LLM),
    ("matmul", "float16", "expand", 513, 2048, 0.90, 0.74, LLM),
]

#: the one table every prediction is read from
MEASURED: List[Row] = DLMC_ROWS + CONV_ROWS + BLOCKS_ROWS + BITMAP_ROWS + EXPAND_ROWS


@dataclass(frozen=True)
class Estimate:
    """``ratio``: predicted t_dense / t_sparse on an H100. ``source``: the measurement it is
    read from (file, kernel family, baseline, N range, and what was borrowed where nothing was
    measured). ``how``: how the sparsity was placed among the measured levels."""
    ratio: float
    source: str
    how: str

    def __str__(self) -> str:
        return f"{self.ratio:.2f}x ({self.how}; {self.source})"


def _family(kind: str, mode: str) -> str:
    if kind == "conv":
        if mode in ROW_BLOCK_MODES:
            raise ValueError(f"mode: {mode} mode computes W @ X only; a convolution uses "
                             "'table', 'values' or 'indices'")
        return "direct"
    return mode if mode in ROW_BLOCK_MODES else "table"


def _curves() -> Dict[Tuple[str, str, str], List[Tuple[int, Optional[int], list, str]]]:
    """(kind, baseline, family) -> [(n_lo, n_hi, [(sparsity, ratio), ...] sorted, source)]."""
    groups: Dict[tuple, Dict[tuple, list]] = {}
    sources: Dict[tuple, str] = {}
    for kind, base, fam, lo, hi, s, r, src in MEASURED:
        groups.setdefault((kind, base, fam), {}).setdefault((lo, hi), []).append((s, r))
        sources[(kind, base, fam, lo, hi)] = src
    return {key: sorted((lo, hi, sorted(points), sources[key + (lo, hi)])
                        for (lo, hi), points in ranges.items())
            for key, ranges in groups.items()}


def _pick_range(ranges, N: int):
    """The N range holding N, else the nearest one (and True: N is outside every range)."""
    for entry in ranges:
        lo, hi = entry[0], entry[1]
        if lo <= N and (hi is None or N <= hi):
            return entry, False
    below = [e for e in ranges if e[1] is not None and e[1] < N]
    return (max(below, key=lambda e: e[1]) if below else ranges[0]), True


def _at_sparsity(points, s: float) -> Tuple[float, str]:
    """The ratio at sparsity ``s`` from measured (sparsity, ratio) points, and how."""
    pct = lambda x: f"{100 * x:g}%"
    s_lo, r_lo = points[0]
    s_hi, r_hi = points[-1]
    for sp, r in points:
        if math.isclose(s, sp, abs_tol=1e-9):
            return r, f"measured at {pct(sp)}"
    if s < s_lo:
        return (r_lo * (1 - s_lo) / (1 - s),
                f"below the lowest measured {pct(s_lo)}: scaled by the nonzeros")
    if s > s_hi:
        return r_hi, f"above the highest measured {pct(s_hi)}: held at its ratio"
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if s0 < s < s1:
            t = (s - s0) / (s1 - s0)
            return 1.0 / ((1 - t) / r0 + t / r1), f"interpolated {pct(s0)}-{pct(s1)}"
    raise AssertionError("unreachable")


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def predicted_speedup(kind: str, M: int, K: int, N: int, density: float, dtype: str,
                      mode: str, dense_tf32: bool = False) -> Estimate:
    """Predicted ``t_dense / t_sparse`` on an H100 for W (M x K, ``density`` nonzeros) times
    X (K x N) (``kind='matmul'``), or a convolution whose implicit GEMM has N columns (batch
    x output positions, ``kind='conv'``), computed in ``dtype`` by the kernel of ``mode``
    (a plan's resolved mode: 'values', 'indices', 'table', 'blocks', 'bitmap' or 'expand').
    ``dense_tf32``: the dense float32 product it is compared with runs on TF32 tensor cores
    (PyTorch's ``torch.backends.cudnn.allow_tf32``, on by default, for convolutions;
    ``torch.backends.cuda.matmul.allow_tf32`` for matmuls); ignored for other dtypes. See the
    module docstring for the table and the model."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    M, K, N = _check_int("M", M), _check_int("K", K), _check_int("N", N)
    if isinstance(density, bool) or not isinstance(density, (int, float)) \
            or not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be a number in [0, 1], got {density!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be a resolved mode, one of {MODES}, got {mode!r}")
    family = _family(kind, mode)
    notes, cap = [], math.inf
    base = dtype
    if dtype == "float64":
        notes.append("float64 not measured: float32's figure, capped at 1.0x")
        base, cap = "float32", 1.0
    if base == "float32" and dense_tf32:
        base = "tf32"
    if base == "bfloat16" and kind == "matmul":
        notes.append("bfloat16 from float16's figures")
        base = "float16"
    if family in ROW_BLOCK_MODES and base in ("float32", "tf32"):
        notes.append(f"{family} mode not measured in {dtype}: the table kernel's figure, "
                     "capped at 1.0x")
        family, cap = "table", 1.0
    ranges = _curves()[(kind, base, family)]
    (lo, hi, points, source), outside = _pick_range(ranges, N)
    if outside:
        notes.append(f"N={N} outside the measured ranges: the nearest, capped at 1.0x")
        cap = 1.0
    ratio, how = _at_sparsity(points, 1.0 - float(density))
    baseline = {"float32": "fp32 (TF32 off)", "tf32": "TF32", "float16": "fp16",
                "bfloat16": "bf16"}[base]
    n_range = (f"N >= {lo}" if hi is None else f"N = {lo}" if hi == lo else f"N {lo}-{hi}")
    text = f"{source}; vs dense {baseline}, {n_range}"
    if notes:
        text += "; " + "; ".join(notes)
    return Estimate(min(ratio, cap), text, how)
