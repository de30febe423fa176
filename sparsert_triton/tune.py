"""Autotuner: time candidate schedules of one sparse kernel on the GPU and remember the best.

    from sparsert_triton.tune import tune, heuristic
    schedule, results = tune(fc, weight, X, bias, budget_s=60, max_compile_s=30)
    k = fc.specialize(weight, schedule=schedule)

The search space (:func:`candidate_schedules`) spans the three modes, rows per program, the
column tile ``block_n``, row ordering, the table-mode ``chunk``, ``use_dot`` (half dtypes),
``num_warps`` and the unrolled compile-unit size. Candidates are pruned before
anything is built (:func:`prune`): invalid plans, duplicates (two schedules resolving to one
plan), and unrolled schedules whose estimated compile time exceeds ``max_compile_s``. Compile
time of the unrolled modes is linear in the straight-line statements of the layout (one FMA per
nonzero, one load per distinct ``X`` row of each part, one store per row;
:func:`unrolled_statements`, with a cheap lower bound first), about ``COMPILE_S_PER_STATEMENT``
seconds each on one core (with ``SPARSERT_COMPILE_WORKERS``, a variant's kernels compile in
parallel and the estimate is its longest kernel or an even share of the whole, whichever is
longer); builds already made in this process cost nothing. Candidates run in
priority order while the time budget lasts; each one's first result is checked against the
float64 reference, then it is timed (median of CUDA-graph replays). The budget counts
everything from the call on (weight conversion, pruning, the reference, every build, check and
timing), and a candidate starts only if its predicted cost fits what is left: its compile
estimate plus the most that earlier candidates of its mode took beyond theirs (host-side
specialisation and cache writes grow with the nonzeros; the compile model does not see them). The winner is stored as
JSON in ``<cache>/tuned/`` under a key of (mask digest, N bucket = next power of two, dtypes,
operand kinds, epilogue, GPU name and capability, versions of triton/torch/sparsert), so the
next call for the same problem returns at once without timing.

Without a GPU (or under ``TRITON_INTERPRET=1``) ``tune`` raises, unless ``allow_cpu=True``
(then it returns :func:`heuristic`) or a ``timer`` is passed (tests inject a fake timer).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dsl import Schedule, ir

from .api import SparseKernel, SpecializedKernel, sparse_kernel
from .compiler.canonicalise import EXPAND_TILES, blocks_shape, expand_tiles, plan_for
from .compiler.compile import compile_workers, interpreting
from .compiler.plan import Plan, Signature
from .compiler.specialise import specialise
from .runtime import cache
from .runtime.arguments import conv_signature_for, signature_for
from .weights import WEIGHT_DTYPES, SparseWeight, as_sparse_weight

#: Seconds of Triton compile per unrolled statement on one core (measured on the H100 host).
COMPILE_S_PER_STATEMENT = 2.5e-3
#: Fixed seconds per unrolled variant (module import, launcher build).
COMPILE_S_FIXED = 0.5
#: Seconds to compile a table-mode kernel (its code does not depend on the mask).
TABLE_COMPILE_S = 1.5
#: Seconds per candidate besides compiling (specialise, check, time) until one has been
#: measured: the search then predicts each candidate from what earlier ones took.
CANDIDATE_OVERHEAD_S = 0.3
#: |Y - ref| <= tol * (1 + |W||X| + |ref|), by dtype (float32 accumulation, output rounding).
TOLERANCE = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
DEFAULT_BUDGET_S = 60.0
DEFAULT_MAX_COMPILE_S = 30.0
HEURISTIC_MAX_COMPILE_S = 10.0


@dataclass
class TuneResult:
    """One candidate's outcome. ``status``: ok | wrong | error | skipped | cached."""
    schedule: Schedule
    plan: Optional[Plan]
    est_compile_s: float
    status: str
    compile_s: Optional[float] = None    # first call: specialise + generate + compile + launch
    median_us: Optional[float] = None
    detail: str = ""

    def row(self) -> dict:
        return {"schedule": repr(self.schedule), "status": self.status,
                "est_compile_s": round(self.est_compile_s, 3), "compile_s": self.compile_s,
                "median_us": self.median_us, "detail": self.detail}


# ------------------------------------------------------------------ small helpers

def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, int(n)))))


def dtype_name(dtype) -> str:
    if isinstance(dtype, torch.dtype):
        if dtype not in WEIGHT_DTYPES:
            raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return WEIGHT_DTYPES[dtype]
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCE)}, got {dtype!r}")
    return dtype


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """What the tuned plan is valid for: the GPU's name and capability, or the interpreter."""
    if interpreting() or device.type != "cuda":
        return "interpreter"
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"


# ------------------------------------------------------------------ compile-cost model

def statements_lower_bound(weight: SparseWeight, rows_per_program: int, row_order: str = "given") -> int:
    """A cheap lower bound on the unrolled statements: nnz FMAs, one store per row, and per
    row group one load of each distinct column's X row (parts of a group load at least that)."""
    w, R = weight, max(1, int(rows_per_program))
    if row_order == "given":
        order = np.arange(w.M)
    else:
        order = np.argsort(-w.row_nnz, kind="stable")
    group_of_row = np.empty(w.M, np.int64)
    group_of_row[order] = np.arange(w.M) // R
    rows = np.repeat(np.arange(w.M), w.row_nnz)
    loads = np.unique(group_of_row[rows] * w.K + w.indices).size
    return w.nnz + w.M + int(loads)


def kernel_statements(weight: SparseWeight, plan: Plan) -> List[int]:
    """The straight-line statements of each kernel of an unrolled plan, counted on its real
    layout."""
    layout = specialise(weight, plan)
    return [int(sum(p.statements for g in layout.groups[a:b] for p in g.parts))
            for a, b in layout.kernels]


def unrolled_statements(weight: SparseWeight, plan: Plan) -> int:
    """The straight-line statements of an unrolled plan, counted on its real layout."""
    return sum(kernel_statements(weight, plan))


def _seconds(statements: int) -> float:
    return COMPILE_S_FIXED + COMPILE_S_PER_STATEMENT * statements


def estimate_compile_s(weight: SparseWeight, plan: Plan, exact_below: float = math.inf,
                       workers: Optional[int] = None) -> float:
    """Seconds a cold build of this plan is expected to take. Unrolled plans are counted
    exactly (by specialising) unless the lower bound already exceeds ``exact_below``. With
    ``workers`` > 1 (default: ``SPARSERT_COMPILE_WORKERS``) a variant's kernels compile side by
    side, so the build takes the longer of its largest kernel and an even share of the whole."""
    if plan.mode in ("table", "blocks", "bitmap", "expand"):   # loop kernels, whatever nnz
        return TABLE_COMPILE_S
    workers = max(1, compile_workers() if workers is None else int(workers))
    # nnz FMAs and M stores, without counting loads: free, and enough to skip most large layers
    low = _seconds((weight.nnz + weight.M) / workers)
    if low > exact_below:
        return low
    low = _seconds(statements_lower_bound(weight, plan.rows_per_program, plan.row_order) / workers)
    if low > exact_below:
        return low
    per_kernel = kernel_statements(weight, plan)
    total = sum(per_kernel)
    if workers == 1 or len(per_kernel) == 1:
        return _seconds(total)
    return _seconds(max(max(per_kernel), total / workers))


# ------------------------------------------------------------------ search space

def heuristic(weight, N: int, dtype="float32", max_compile_s: float = HEURISTIC_MAX_COMPILE_S,
              conv: bool = False, tap_masks_fit: bool = False) -> Schedule:
    """The default without timing: ``plan_for``'s choice, switched to table mode when its
    unrolled build would take longer than ``max_compile_s``. Needs no GPU. ``conv``: the
    weight is a convolution's (C_out x C_in kh kw); ``tap_masks_fit``: tap masks serve its
    input (``ConvGeometry.masks_fit``), as the kernel resolves it for a call."""
    w = as_sparse_weight(weight)
    d = dtype_name(dtype)
    plan = plan_for(Schedule(), w, int(N), d, conv=conv, tap_masks_fit=tap_masks_fit)
    if plan.mode != "table" and estimate_compile_s(w, plan, max_compile_s) > max_compile_s:
        plan = plan_for(Schedule(mode="table"), w, int(N), d, conv=conv,
                        tap_masks_fit=tap_masks_fit)
    return plan.to_schedule()


#: Direct-convolution candidates: every schedule that was the fastest on at least one of the
#: 32 fp32 DLMC 3x3 cases at 90% (H100, batch 1 and 8; bench/results/conv_h100_pad_tune.jsonl,
#: conv_h100_split_tune.jsonl), most wins first: the one-row kernel on the zero-padded input
#: (wide tiles at batch 8, narrow ones at batch 1, rows split over 4 warps for the 512-channel
#: layers at batch 1) and the unrolled kernel for the 64-channel layers. The tap-segment kernel
#: (the default before) won none of them.
def _conv_row(block_n: int, chunk: int, num_warps: int = 1, **switches) -> Schedule:
    """The one-row conv table kernel on the zero-padded input."""
    return Schedule(mode="table", rows_per_program=1, block_n=block_n, chunk=chunk,
                    num_warps=num_warps, conv_input="padded", **switches)


CONV_CANDIDATES = [
    _conv_row(64, 8, prefetch_tail=True), _conv_row(128, 8, prefetch_tail=True),
    _conv_row(32, 4),
    Schedule(mode="values", rows_per_program=32, block_n=32, num_warps=1),
    _conv_row(64, 8, num_warps=4, split_k=4),
    Schedule(mode="values", rows_per_program=32, block_n=32, num_warps=1,
             conv_input="padded"),
    # a whole row group per function (each loaded X vector feeds every row of the group that
    # uses it), sixteen warps running the same code on 512 columns (one instruction fetch
    # serves four warps on each SM sub-partition): 128-channel layer at batch 8, 25.3-25.7 us
    # against 29.4 us with four warps x 128 columns and 45-48 us for the padded table kernel;
    # 64-channel layer 16.4-16.8 us against 19.7 (H100, conv_h100_ctas*_tune.jsonl)
    Schedule(mode="values", rows_per_program=32, block_n=512, num_warps=16,
             max_statements_per_function=16384, conv_input="padded"),
    # the same with 16-row groups (twice the programs): the stride-2 128-channel layer at
    # batch 8, 38.7 us against 47.8 with 32 rows and 41.9 with four warps x 128 columns
    Schedule(mode="values", rows_per_program=16, block_n=512, num_warps=16,
             max_statements_per_function=16384, conv_input="padded"),
    # the one-row kernel without the padded copy (tap masks: the same loads, masked, no copy
    # kernel): faster than the padded form in 17 of 26 DLMC cases, up to 21% (stride-2
    # projections; H100, conv_h100_masks_*_tune.jsonl); the heuristic's default
    Schedule(mode="table", rows_per_program=1, block_n=64, chunk=8, num_warps=1,
             conv_input="masked", prefetch_tail=True),
    # the padded copy with the X rows a chunk ahead in chunks of 16 (prefetch_x: with few
    # programs each row's chain of dependent X loads sets the time): the best of 8 table
    # schedules in 10 of the 16 fp32 DLMC layers at batch 1 (1.2-1.8x over tap masks on the
    # 256/512-channel layers), never at batch 8; the default for few programs (plan_for).
    # With tap masks instead it won none (H100, conv_h100_b1_px_tune.jsonl,
    # conv_h100_prefetch_x_tune.jsonl)
    _conv_row(64, 16, prefetch_tail=True, prefetch_x=True)]


def conv_candidate_schedules(weight, N: int, dtype="float32",
                             tap_masks_fit: bool = False) -> List[Schedule]:
    """Candidates for a direct convolution of N output positions: the heuristic first, then
    :data:`CONV_CANDIDATES` with tiles no wider than N needs (narrower tiles: same warps)."""
    w = as_sparse_weight(weight)
    top = max(16, next_pow2(N))
    out = [heuristic(w, N, dtype, conv=True, tap_masks_fit=tap_masks_fit)]
    extra = []
    if dtype_name(dtype) in ("float16", "bfloat16"):
        # tensor cores over each row group's (c_in, tap) union, as for W @ X (not measured
        # on convolutions yet: timed here like every candidate)
        extra = [Schedule(mode="table", rows_per_program=R, chunk=16, block_n=bn,
                          row_order="cluster", use_dot=True, num_warps=4)
                 for R, bn in ((16, 64), (32, 128))]
    for s in CONV_CANDIDATES + extra:
        if s.block_n > top:   # (a split row keeps a warp per part, each on the whole tile)
            warps = s.num_warps if s.split_k > 1 else max(1, min(s.num_warps, top // 32))
            s = s.replace(block_n=max(top, 32 if s.split_k > 1 else 16), num_warps=warps)
        out.append(s)
    return list(dict.fromkeys(out))


def _block_ns(N: int) -> List[int]:
    top = min(256, max(16, next_pow2(N)))
    out = {min(top, 64), min(top, 128)}
    if N < 128 and top >= 32:
        out.add(top // 2)
    if N >= 1024:
        out.add(256)
    return sorted(out)


def candidate_schedules(weight, N: int, dtype="float32", conv: bool = False,
                        tap_masks_fit: bool = False) -> List[Schedule]:
    """Candidate schedules in priority order (likely winners and cheap builds first);
    ``conv``: for a direct convolution (:func:`conv_candidate_schedules`)."""
    if conv:
        return conv_candidate_schedules(weight, N, dtype, tap_masks_fit)
    w = as_sparse_weight(weight)
    d = dtype_name(dtype)
    half = d in ("float16", "bfloat16")
    bns = _block_ns(N)
    bn_main = min(128, bns[-1])
    first, second, third = [heuristic(w, N, d)], [], []

    # table mode, scalar FMAs, one row per program. H100 (bench/results/explore_h100_run2.csv,
    # explore_h100_run3_parallel_rows.csv): more rows per program, run in turn or side by
    # side (the removed parallel_rows), or clustered by shared columns, ran 1.2-20x slower on every DLMC
    # layer tried, so they are not searched. block_n below 32 * num_warps idles threads (block_n
    # 64 with 4 warps ran 2x slower than 128), so small tiles get fewer warps.
    for i, U in enumerate((4, 8, 2)):
        for bn in bns:
            s = Schedule(mode="table", rows_per_program=1, chunk=U, block_n=bn, row_order="nnz",
                         num_warps=max(1, min(4, bn // 32)))
            (first if i == 0 and bn == bn_main else second).append(s)
    # the prefetched tail (measured on convolutions only, where it helps with the padded
    # input; on W @ X timed here like every candidate)
    second.append(Schedule(mode="table", rows_per_program=1, chunk=8, block_n=bn_main,
                           row_order="nnz", num_warps=max(1, bn_main // 128),
                           prefetch_tail=True))
    # and the X rows a chunk ahead (half the chain of dependent X loads), in chunks of 8 and
    # 16: the fp32 default for small grids of long rows (plan_for); in fp16 it ran from 1.54x
    # faster to 1.42x slower than chunks of 8 on the DLMC GEMMs it would change (H100,
    # bench/results/explore_h100_run9_default_float16.csv), so the search times it there
    for U in (8, 16):
        second.append(Schedule(mode="table", rows_per_program=1, chunk=U, block_n=bn_main,
                               row_order="nnz", num_warps=max(1, bn_main // 128),
                               prefetch_tail=True, prefetch_x=True))
    # fewer warps, several columns per thread: one index load serves a wider vector load
    # (ncu: the L1 pipeline, not L2, is the one-row kernel's busiest unit)
    for bn in [b for b in bns if b >= 64]:
        for U in (8, 4):
            s = Schedule(mode="table", rows_per_program=1, chunk=U, block_n=bn, row_order="nnz",
                         num_warps=max(1, bn // 128))
            (first if bn == bn_main and U == 8 else second).append(s)

    # rows split over warps (split_k), where few programs leave SMs idle: 1.29x and 1.08x over
    # the one-row default at N = 49 and 196, slower at N >= 256 (H100,
    # bench/results/explore_h100_run6_split_k.csv)
    if N <= 256:
        for k in (8, 4):
            second.append(Schedule(mode="table", rows_per_program=1, chunk=4,
                                   block_n=min(64, bns[-1]), row_order="nnz",
                                   split_k=k))

    # table mode on tensor cores (half dtypes)
    if half:
        bn_dot = [b for b in bns if b >= 16] or [16]
        for i, (R, U, bn, warps) in enumerate([(16, 16, 64, 4), (16, 32, 64, 4), (16, 16, 128, 4),
                                               (32, 16, 128, 4), (32, 32, 128, 8), (64, 16, 128, 8)]):
            bn = min(bn, bn_dot[-1])
            s = Schedule(mode="table", rows_per_program=R, chunk=U, block_n=bn, row_order="cluster",
                         use_dot=True, num_warps=warps)
            (first if i == 0 else second).append(s)

    # the blocks mode (row blocks of padded nonzero lists, 16-bit columns) for the
    # memory-bound products of few columns: the default's shape first (canonicalise.
    # blocks_shape), then the shapes that won somewhere on the Llama-2-7B MLP shapes (H100,
    # fp16; bench/NOTES.md, twelfth, thirteenth and eighteenth sessions): 2 x 256, 4 x 256,
    # 16 x 64 and 4 x 128 at N = 1 to 4, 2 x 64 at N = 16, 8 x 16 at N = 64, 8 x 64 the old
    # N <= 4 default
    if N <= 64:
        bn_b = min(64, next_pow2(N))
        shapes = [blocks_shape(w, N)]
        shapes += [shape for shape in ((2, 256), (4, 256), (16, 64), (4, 128), (2, 64), (8, 64),
                                       (4, 64), (8, 16))
                   if shape not in shapes]
        for i, (R, U) in enumerate(shapes):
            if R * U * bn_b <= 16384:
                s = Schedule(mode="blocks", rows_per_program=R, chunk=U, block_n=bn_b)
                (first if i == 0 and half else second).append(s)

    # the bitmap mode (a bit per position, the tile's packed values decoded in registers) for
    # half precision: the plan's shape (multiply-adds at N = 1, tl.dot of the decoded tile
    # from 2), then shapes without register spills in the sm_90 code (bench/NOTES.md,
    # fourteenth and fifteenth sessions): multiply-adds where rows_per_program < 16 (the
    # plan's own 8 x 256 at N = 1 is not listed twice)
    if half and N <= 256:
        shapes = [None] + ([(32, 256, 8)] if N == 1 else
                           [(8, 128, 4), (32, 256, 4)] if N < 16 else
                           [(32, 256, 4), (64, 256, 8), (128, 128, 8)] if N == 16 else
                           [(16, 128, 4), (32, 64, 4)])
        for i, shape in enumerate(shapes):
            if shape is None:
                s = Schedule(mode="bitmap")
            else:
                R, T, warps = shape
                s = Schedule(mode="bitmap", rows_per_program=R, chunk=T, num_warps=warps)
            (first if i == 0 else second).append(s)

    # the expand mode (dense tiles written once per call, then tl.dot) for many columns in
    # half precision: its plan's tiles, and the other tile families its plan picks from by
    # the output's size (bench/NOTES.md, seventeenth and nineteenth sessions)
    if half and N >= 128:
        second.append(Schedule(mode="expand"))
        picked = expand_tiles(w.M, w.K, N)
        for R, T, warps in EXPAND_TILES:
            if (R, T, warps) != picked and T <= max(64, N):
                second.append(Schedule(mode="expand", rows_per_program=R, block_n=T,
                                       num_warps=warps))

    # unrolled modes around plan_for's rows per program (about 256 FMAs per group)
    base = plan_for(Schedule(mode="values"), w, N, d).rows_per_program
    rs = [base] + [r for r in (base * 2, base // 2) if 1 <= r <= 64 and r != base]
    unrolled = [Schedule(mode="values", rows_per_program=base, block_n=bn_main, row_order="cluster")]
    for R in rs:
        for order in ("given", "cluster"):
            unrolled.append(Schedule(mode="values", rows_per_program=R, block_n=bn_main, row_order=order))
    unrolled.append(Schedule(mode="indices", rows_per_program=base, block_n=bn_main, row_order="cluster"))
    for bn in bns:
        if bn != bn_main:
            unrolled.append(Schedule(mode="values", rows_per_program=base, block_n=bn, row_order="cluster"))
    # (programs looping over several column tiles, the removed column_programs, ran 2-5x
    # slower on the H100)
    # another compile-unit size (noinline functions per program)
    unrolled.append(Schedule(mode="values", rows_per_program=base, block_n=bn_main, row_order="cluster",
                             max_statements_per_function=1024))
    # narrow tiles, one warp: more programs for layers with few row groups (ncu: 50 programs
    # of 4 warps on 132 SMs for a 64 x 256 layer, 6% occupancy)
    unrolled.insert(1, Schedule(mode="values", rows_per_program=base, block_n=min(32, bns[-1]), num_warps=1,
                                row_order="cluster"))
    first.append(unrolled[0])
    first.append(unrolled[1])
    third.extend(unrolled[1:])
    return list(dict.fromkeys(first + second + third))      # unique, in order


def prune(schedules: Sequence[Schedule], weight, N: int, dtype="float32",
          max_compile_s: float = DEFAULT_MAX_COMPILE_S,
          estimate: Optional[Callable[[Plan], float]] = None,
          conv: bool = False, tap_masks_fit: bool = False
          ) -> Tuple[List[TuneResult], List[TuneResult]]:
    """Split candidates into (kept, skipped). Kept results carry the resolved plan (``conv``:
    resolved for a convolution) and the estimated compile seconds (``estimate(plan)``, default
    :func:`estimate_compile_s`); skipped ones say why (invalid, duplicate, compile too long)."""
    w = as_sparse_weight(weight)
    d = dtype_name(dtype)
    kept, skipped, seen = [], [], set()
    for s in schedules:
        try:
            plan = plan_for(s, w, int(N), d, conv=conv, tap_masks_fit=tap_masks_fit)
        except ValueError as e:
            skipped.append(TuneResult(s, None, 0.0, "skipped", detail=f"invalid: {e}"))
            continue
        if plan in seen:
            skipped.append(TuneResult(s, plan, 0.0, "skipped", detail="duplicate plan"))
            continue
        seen.add(plan)
        est = estimate(plan) if estimate is not None else estimate_compile_s(w, plan, max_compile_s)
        if est > max_compile_s:
            skipped.append(TuneResult(s, plan, est, "skipped",
                                      detail=f"estimated compile {est:.1f}s > max_compile_s {max_compile_s:g}s"))
            continue
        kept.append(TuneResult(plan.to_schedule(), plan, est, "pending"))
    return kept, skipped


# ------------------------------------------------------------------ correctness and timing

def reference_and_magnitude(weight: SparseWeight, X: torch.Tensor,
                            conv=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(W @ X, |W| @ |X|)`` in float64 on X's device (the plain product, no epilogue); for a
    convolution (``conv``: its ConvGeometry) the same through ``conv2d``."""
    W = weight.to_dense(torch.float64).to(X.device)
    X64 = X.detach().to(torch.float64)
    if conv is None:
        return W @ X64, W.abs() @ X64.abs()
    W4 = W.reshape(weight.M, conv.C_in, conv.kh, conv.kw)
    args = (None, conv.stride, conv.padding, conv.dilation)
    return (torch.nn.functional.conv2d(X64, W4, *args),
            torch.nn.functional.conv2d(X64.abs(), W4.abs(), *args))


def call_signature(kernel: SpecializedKernel, X: torch.Tensor, operands) -> Tuple[Signature, int]:
    """The call's signature and N (columns of the product: B * Ho * Wo for a convolution)."""
    if kernel.conv is None:
        return signature_for(kernel.program, kernel.weight, X, operands), int(X.shape[1])
    sig, shape = conv_signature_for(kernel.program, kernel.weight, kernel.conv, X, operands)
    return sig, int(shape[0] * shape[2] * shape[3])


def check_result(Y: torch.Tensor, ref: torch.Tensor, mag: torch.Tensor, dtype="float32",
                 tol: Optional[float] = None) -> Tuple[bool, float]:
    """``(passed, worst ratio)`` of ``|Y - ref| / (tol (1 + |W||X| + |ref|))``; NaN fails."""
    tol = TOLERANCE[dtype_name(dtype)] if tol is None else tol
    if tuple(Y.shape) != tuple(ref.shape):
        return False, math.inf
    Yd = Y.detach().to(ref.device, torch.float64)
    if Yd.numel() == 0:
        return True, 0.0
    if not torch.isfinite(Yd).all():
        return False, math.inf
    ratio = ((Yd - ref).abs() / (tol * (1 + mag.to(ref.device) + ref.abs()))).max().item()
    return ratio <= 1.0, ratio


def graph_median_us(fn: Callable[[], object]) -> float:
    """Median GPU microseconds per call of ``fn`` (CUDA-graph replays, :mod:`.timing`)."""
    from .runtime.timing import graph_median_us as median
    return median([fn], replays=20, target_us=500.0)


_FIRST_CALL_S = {}     # build key -> seconds of its first call in this process
_BUILT_TABLES = set()  # table kernels compiled in this process (their code is mask-free)
KNOWN_BUILD_S = 0.05


def _build_keys(program: ir.Program, w: SparseWeight, plan: Plan, sig, X: torch.Tensor,
                N: int, conv=None):
    """(key of this exact build, key of its Triton binary when it is mask-independent)."""
    exact = (w.mask_digest(), w.values_digest() if plan.mode == "values" else None, plan, sig,
             str(X.device), repr(program.out), repr(conv), tuple(X.stride()))
    shared = ((plan, sig, str(X.device), repr(program.out), N == 1, N % 16 == 0)
              if plan.mode == "table" else None)
    return exact, shared


def known_build(program: ir.Program, w: SparseWeight, plan: Plan, sig, X: torch.Tensor,
                N: Optional[int] = None, conv=None) -> bool:
    """Whether this build (or, in table mode, its mask-independent binary) already ran here."""
    exact, shared = _build_keys(program, w, plan, sig, X, X.shape[1] if N is None else N, conv)
    return exact in _FIRST_CALL_S or (shared is not None and shared in _BUILT_TABLES)


def first_call(kernel: SpecializedKernel, X: torch.Tensor, *operands):
    """Run a specialised kernel once: ``(Y, seconds)``. Seconds are those of the first call
    of this (mask, values if baked, plan, signature, device, epilogue) in this process, i.e.
    the cold build; later calls of the same build return that first figure."""
    sig, N = call_signature(kernel, X, operands)
    plan = kernel.plan(N, sig.x_dtype, tuple(X.shape[2:]) if kernel.conv is not None else None)
    exact, shared = _build_keys(kernel.program, kernel.weight, plan, sig, X, N, kernel.conv)
    t0 = time.perf_counter()
    Y = kernel(X, *operands)
    _sync(X.device)
    if shared is not None:
        _BUILT_TABLES.add(shared)
    return Y, _FIRST_CALL_S.setdefault(exact, time.perf_counter() - t0)


# ------------------------------------------------------------------ persistence

def tuned_dir():
    return cache.subdir("tuned")


def plan_key(program, weight: SparseWeight, N: int, sig, device: str,
             conv=None) -> Tuple[str, dict]:
    parts = {"mask": weight.mask_digest(), "M": weight.M, "K": weight.K, "conv": repr(conv),
             "n_bucket": next_pow2(N), "x_dtype": sig.x_dtype, "w_dtype": sig.w_dtype,
             "out_dtype": sig.out_dtype, "operands": [list(k) for k in sig.operand_kinds],
             "program": repr(program.out), "device": device, "versions": cache.versions()}
    blob = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], parts


def load_tuned(key: str) -> Optional[dict]:
    found = [r / "tuned" / f"{key}.json" for r in cache.roots()]
    found = [p for p in found if p.is_file()]
    if not found:
        return None
    path = found[0]
    try:
        rec = json.loads(path.read_text())
        rec["plan"] = Plan(**rec["plan"])
        return rec
    except Exception:           # unreadable or from an older layout: tune again
        try:
            path.unlink(missing_ok=True)
        except OSError:         # a read-only cache: the new plan goes to the fallback
            pass
        return None


def store_tuned(key: str, parts: dict, best: TuneResult, results: Sequence[TuneResult]):
    rec = {"key": parts, "plan": asdict(best.plan), "schedule": repr(best.schedule),
           "median_us": best.median_us, "compile_s": best.compile_s, "tuned_at": time.time(),
           "results": [r.row() for r in results]}
    cache.write_file("tuned", f"{key}.json", json.dumps(rec, indent=1, default=repr).encode())


# ------------------------------------------------------------------ the tuner

def _as_program(kernel) -> ir.Program:
    if isinstance(kernel, (SparseKernel, SpecializedKernel)):
        return kernel.program
    if callable(kernel):
        return sparse_kernel(kernel).program
    raise TypeError(f"kernel must be a @sparse_kernel program, a specialised kernel or a "
                    f"function, got {type(kernel).__name__}")


def tune(kernel, weight, X: torch.Tensor, *operands, budget_s: float = DEFAULT_BUDGET_S,
         max_compile_s: float = DEFAULT_MAX_COMPILE_S, progress: bool = True,
         timer: Optional[Callable[[Callable[[], object]], float]] = None, allow_cpu: bool = False,
         candidates: Optional[Sequence[Schedule]] = None, use_cache: bool = True,
         reference: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
         clock: Callable[[], float] = time.perf_counter) -> Tuple[Schedule, List[TuneResult]]:
    """Find the fastest correct schedule of ``kernel`` for ``weight`` and inputs like ``X``.

    ``budget_s``: wall seconds for the whole call, preparation included (candidates run until
    one succeeds, even past it; after that none starts whose predicted cost does not fit);
    ``max_compile_s``: candidates estimated to build slower are not tried; ``timer(fn)``:
    microseconds per call (default: CUDA-graph median); ``candidates``: replace the search
    space; ``use_cache``: read and write the tuned-plan store; ``reference``: precomputed
    ``(result, |W| @ |X|)`` in float64 for the plain product (default: computed here);
    ``clock``: seconds for the budget (tests pass a fake one).
    Returns ``(best schedule, results of every candidate)``.
    """
    t_start = clock()
    program = _as_program(kernel)
    conv = kernel.conv if isinstance(kernel, SpecializedKernel) else None
    if isinstance(ir.product(program.out), ir.Conv2d) and conv is None:
        raise TypeError("tune a convolution through its specialised kernel: "
                        "tune(program.specialize(weight), None, X, ...)")
    if weight is None and isinstance(kernel, SpecializedKernel):
        weight = kernel.weight
    w = as_sparse_weight(weight) if conv is None else kernel.weight
    if not isinstance(X, torch.Tensor) or X.dim() != (2 if conv is None else 4):
        raise TypeError("X must be a 2-D torch.Tensor (K x N)" if conv is None else
                        "X must be a 4-D torch.Tensor (B, C_in, H, W)")
    probe = SpecializedKernel(program, Schedule(), w, conv)
    if conv is None:
        N = int(X.shape[1])
    else:
        Ho, Wo = conv.output_size(X.shape[2], X.shape[3])
        N = int(X.shape[0]) * max(Ho, 0) * max(Wo, 0)
    if N == 0:
        raise ValueError("X has no columns (N = 0): nothing to tune")
    # 'auto' fields resolved as the kernel resolves them for this input
    fit = conv is not None and conv.masks_fit(int(X.shape[2]), int(X.shape[3]))
    on_gpu = X.device.type == "cuda" and not interpreting() and torch.cuda.is_available()
    if timer is None and not on_gpu and allow_cpu:
        return heuristic(w, N, WEIGHT_DTYPES.get(X.dtype, "float32"), conv=conv is not None,
                         tap_masks_fit=fit), []
    sig, N = call_signature(probe, X, operands)
    d = sig.x_dtype
    key, parts = plan_key(program, w, N, sig, device_name(X.device), conv)
    if use_cache:
        hit = load_tuned(key)
        if hit is not None:
            s = hit["plan"].to_schedule()
            return s, [TuneResult(s, hit["plan"], 0.0, "cached", hit.get("compile_s"),
                                  hit.get("median_us"), f"from {key}.json")]
    if timer is None:
        if not on_gpu:
            raise RuntimeError("tune times kernels on a CUDA GPU: X must be a CUDA tensor and "
                               "TRITON_INTERPRET unset (pass allow_cpu=True for the heuristic "
                               "default, or a timer)")
        timer = graph_median_us

    def estimate(plan: Plan) -> float:
        if known_build(program, w, plan, sig, X, N, conv):
            return KNOWN_BUILD_S
        return estimate_compile_s(w, plan, max_compile_s)

    space = (candidates if candidates is not None
             else candidate_schedules(w, N, d, conv is not None, fit))
    kept, skipped = prune(space, w, N, d, max_compile_s, estimate, conv is not None, fit)
    if not kept:
        raise ValueError("no candidate schedule survives pruning: "
                         + "; ".join(f"{r.schedule!r}: {r.detail}" for r in skipped))
    if reference is None or not isinstance(program.out, ir.MatMul):
        ref = probe.reference(X, *operands).to(X.device)
        mag = reference_and_magnitude(w, X, conv)[1]
    else:
        ref, mag = reference
    tol = max(TOLERANCE[d], TOLERANCE[sig.out_dtype])

    from tqdm.auto import tqdm
    results = list(skipped)
    best = None
    beyond = {}     # plan mode -> the most seconds a candidate took beyond its compile estimate
    bar = tqdm(kept, desc=f"tune {w.M}x{w.K} nnz={w.nnz} N={N} {d}", disable=not progress,
               leave=False)
    for r in bar:
        left = budget_s - (clock() - t_start)
        if known_build(program, w, r.plan, sig, X, N, conv):   # built meanwhile: costs nothing now
            r.est_compile_s = KNOWN_BUILD_S
        predicted = r.est_compile_s + beyond.get(
            r.plan.mode, max(beyond.values(), default=CANDIDATE_OVERHEAD_S))
        if best is not None and predicted > left:
            r.status, r.detail = "skipped", (f"budget: predicted {predicted:.1f}s, "
                                             f"{max(left, 0):.1f}s left")
            results.append(r)
            continue
        t_candidate = clock()
        try:
            k = SpecializedKernel(program, r.schedule, w, conv)
            Y, r.compile_s = first_call(k, X, *operands)
            ok, ratio = check_result(Y, ref, mag, d, tol)
            if not ok:
                r.status, r.detail = "wrong", f"error ratio {ratio:.3g} > 1"
            else:
                out = torch.empty_like(Y)
                r.median_us = float(timer(lambda: k(X, *operands, out=out)))
                r.status = "ok"
                if best is None or r.median_us < best.median_us:
                    best = r
                    bar.set_postfix(best_us=f"{best.median_us:.2f}")
        except Exception as e:          # a candidate that fails to build or launch
            r.status, r.detail = "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        took = clock() - t_candidate - r.est_compile_s
        beyond[r.plan.mode] = max(beyond.get(r.plan.mode, CANDIDATE_OVERHEAD_S), took)
        results.append(r)
    bar.close()
    if best is None:
        raise RuntimeError("no candidate schedule ran correctly:\n" + "\n".join(
            f"  {r.schedule!r}: {r.status} {r.detail}" for r in results))
    if use_cache:
        store_tuned(key, parts, best, results)
    return best.schedule, results
