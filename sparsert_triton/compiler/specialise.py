"""Specialise: lay one mask out for one plan.

Rows are ordered (``row_order``) and cut into groups of ``rows_per_program``; each group is
computed by one program. The unrolled modes (``values``, ``indices``) additionally split each
group's rows into *parts* whose statements (one load per distinct ``X`` row, one FMA per
nonzero, one store per row) stay under ``max_statements_per_function``; each part becomes a
``noinline`` function that loads, multiplies and stores its rows (``X`` rows shared by several
parts of a program are re-read from L1), groups call their parts, and groups are cut into
kernels of at most ``max_functions_per_kernel`` functions. This bounds every compiled unit, so compile time grows
linearly in nnz. The table mode instead builds buffers: per group, the sorted union of its
rows' columns (padded to ``chunk``) and a dense (union x rows) block of values.

Every function here is pure: same weight and plan in, same layout out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .plan import Plan
from ..weights import SparseWeight


@dataclass(frozen=True)
class Part:
    """Some rows of one group, computed and stored by one function.

    ``rows`` are local row indices; ``columns`` is ((col, ((local_row, packed_index), ...)), ...)
    over the union of those rows' columns, in column order."""
    rows: Tuple[int, ...]
    columns: Tuple[Tuple[int, Tuple[Tuple[int, int], ...]], ...]

    @property
    def statements(self) -> int:
        return sum(1 + len(e) for _, e in self.columns) + len(self.rows)


@dataclass(frozen=True)
class Group:
    rows: Tuple[int, ...]          # global output rows, in local order
    parts: Tuple[Part, ...]


@dataclass(frozen=True)
class Unrolled:
    """Layout of the unrolled modes."""
    groups: Tuple[Group, ...]
    kernels: Tuple[Tuple[int, int], ...]   # [start, stop) group ranges, one per kernel
    packed_values: np.ndarray              # float64, nnz, in the order the code reads them
    pack_order: np.ndarray                 # packed_values = csr_values[pack_order]


@dataclass(frozen=True)
class Table:
    """Layout of the table mode (buffers for a loop kernel).

    ``per_row`` (the scalar-FMA kernel): each of the G * R row slots has its own segment
    ``[starts[s], starts[s] + lengths[s])`` of ``cols``/``values`` (its CSR row); a program runs
    its R rows one after another, so X rows it re-reads come from L1. For a convolution with
    ``taps`` = kh * kw kernel taps (columns ``k = c_in * taps + tap``), each slot has one
    segment per tap instead (``starts``/``lengths`` entry ``slot * taps + tap``) and ``cols``
    holds ``c_in``: a loop over one tap's nonzeros reads X at one fixed spatial shift, with one
    fixed in-image mask. With ``pad_input`` a row is one segment again and ``cols`` holds each
    nonzero's offset into the zero-padded input (``ConvGeometry.padded_offsets``). Otherwise (the ``tl.dot``
    kernel): per group, the sorted union of its rows' columns, padded to ``chunk``, and a dense
    (union x R) block, entry ``j * R + r``. ``value_index`` says which CSR nonzero feeds each
    entry (the values themselves are read from the weight at launch, so a cached layout serves
    new values with the same mask)."""
    rows: np.ndarray         # int32 [G * R], -1 pads
    starts: np.ndarray       # int32: per slot (per_row) or per group [G + 1] (union)
    lengths: np.ndarray      # int32: nonzeros per slot (per_row) or union length per group
    cols: np.ndarray         # int32, padded by one chunk (three with prefetch_x)
    value_index: np.ndarray  # int64: CSR index feeding each entry, -1 for a padding zero
    groups: int
    per_row: bool


def row_order(weight: SparseWeight, plan: Plan) -> np.ndarray:
    """The order in which rows are assigned to groups."""
    nnz = weight.row_nnz
    if plan.row_order == "given":
        return np.arange(weight.M)
    order = np.argsort(-nnz, kind="stable")
    if plan.row_order == "nnz" or plan.rows_per_program == 1:
        return order
    return _cluster(weight, order, plan.rows_per_program)


#: the exact greedy scores every free row for each row it adds (a sparse product over the
#: whole weight: ~M x nnz work, 330 s for 11008 x 4096 at 50% on a 2-core host); above this
#: much work it groups rows within consecutive windows of CLUSTER_WINDOW rows of the length
#: order instead (every DLMC matrix stays below it: at most 4096 x 840 K)
CLUSTER_EXACT_WORK = 4e9
CLUSTER_WINDOW = 256


def _cluster(weight: SparseWeight, by_length: np.ndarray, R: int) -> np.ndarray:
    """Greedy grouping: seed with the longest free row, then add the rows that share the
    most columns with the group's union (ties: the longer row). Maximises X-row reuse.
    Large weights (``CLUSTER_EXACT_WORK``) are grouped window by window of the length order
    (windows of whole groups), each window's rows scored as a dense block."""
    import scipy.sparse as sp
    A = sp.csr_array((np.ones(weight.nnz, np.float32), weight.indices, weight.indptr),
                     shape=(weight.M, weight.K))
    if float(weight.M) * weight.nnz <= CLUSTER_EXACT_WORK:
        return _greedy_groups(A, np.arange(weight.M), by_length, weight.row_nnz, R)
    W = max(R, CLUSTER_WINDOW // R * R)
    out = []
    for i in range(0, len(by_length), W):
        window = by_length[i:i + W]
        rows = np.sort(window)
        out.append(_greedy_groups(A, rows, np.searchsorted(rows, window), weight.row_nnz, R,
                                  dense=True))
    return np.concatenate(out)


def _greedy_groups(A, rows: np.ndarray, seeds: np.ndarray, row_nnz: np.ndarray, R: int,
                   dense: bool = False) -> np.ndarray:
    """The greedy of :func:`_cluster` over ``rows`` (ascending; ties go to the first) of the
    0/1 matrix ``A``, seeding in the order ``seeds`` (positions in ``rows``); ``dense``: score
    with the rows as one dense block (a window of a large weight)."""
    B = A[rows].toarray() if dense else A[rows]
    free = np.ones(len(rows), bool)
    nnz = row_nnz[rows].astype(np.float64)
    out = []
    for seed in seeds:
        if not free[seed]:
            continue
        free[seed] = False
        group = [seed]
        union = np.zeros(A.shape[1], np.float32)
        union[A.indices[A.indptr[rows[seed]]:A.indptr[rows[seed] + 1]]] = 1
        while len(group) < R and free.any():
            score = B @ union + nnz * 1e-6
            score[~free] = -1
            r = int(np.argmax(score))
            free[r] = False
            group.append(r)
            union[A.indices[A.indptr[rows[r]]:A.indptr[rows[r] + 1]]] = 1
        out.extend(rows[group])
    return np.asarray(out, np.int64)


def _group_rows(weight: SparseWeight, plan: Plan):
    order = row_order(weight, plan)
    R = plan.rows_per_program
    return [order[i:i + R] for i in range(0, weight.M, R)]


def _split_rows(weight: SparseWeight, entries, cap: int):
    """Cut a group's rows (``entries``: (local row, its CSR indices), in order) into parts
    whose statements stay under ``cap``: one load per distinct column, one FMA per nonzero,
    one store per row. A row is never split, so a row longer than ``cap`` gets a part of its
    own."""
    parts, cur, cols, size = [], [], set(), 0
    for r_local, idx in entries:
        rc = weight.indices[idx]
        cost = len(rc) + 1 + sum(1 for c in rc if int(c) not in cols)
        if cur and size + cost > cap:
            parts.append(cur)
            cur, cols, size = [], set(), 0
            cost = 2 * len(rc) + 1
        cur.append((r_local, idx))
        cols.update(int(c) for c in rc)
        size += cost
    if cur:
        parts.append(cur)
    return parts


def specialise_unrolled(weight: SparseWeight, plan: Plan) -> Unrolled:
    groups, pack = [], []
    for rows in _group_rows(weight, plan):
        parts = []
        entries = [(r_local, np.arange(weight.indptr[row], weight.indptr[row + 1]))
                   for r_local, row in enumerate(rows)]
        for sub in _split_rows(weight, entries, plan.max_statements_per_function):
            by_col = {}   # column -> [(local_row, csr_index)]
            for r_local, idx in sub:
                for i in idx:
                    by_col.setdefault(int(weight.indices[i]), []).append((r_local, int(i)))
            columns = []
            for col in sorted(by_col):
                packed = []
                for r_local, i in by_col[col]:
                    packed.append((r_local, len(pack)))
                    pack.append(i)
                columns.append((col, tuple(packed)))
            parts.append(Part(tuple(r for r, _ in sub), tuple(columns)))
        groups.append(Group(tuple(int(r) for r in rows), tuple(parts)))
    if plan.row_order != "given":   # heavy groups first: a shorter tail of the launch
        groups.sort(key=lambda g: -sum(p.statements for p in g.parts))
    kernels, start, funcs = [], 0, 0
    for i, g in enumerate(groups):
        cost = len(g.parts) + 1    # part functions and the group function
        if i > start and funcs + cost > plan.max_functions_per_kernel:
            kernels.append((start, i))
            start, funcs = i, 0
        funcs += cost
    kernels.append((start, len(groups)))
    pack_order = np.asarray(pack, np.int64)
    return Unrolled(tuple(groups), tuple(kernels), weight.values[pack_order], pack_order)


def specialise_table(weight: SparseWeight, plan: Plan, taps: int = 1,
                     offsets: Optional[np.ndarray] = None) -> Table:
    if plan.use_dot:
        return _table_union(weight, plan)
    return _table_rows(weight, plan, taps if plan.tap_segments else 1, offsets)


def _table_rows(weight: SparseWeight, plan: Plan, taps: int = 1,
                offsets: Optional[np.ndarray] = None) -> Table:
    R, U = plan.rows_per_program, plan.chunk
    groups = [list(rows) for rows in _group_rows(weight, plan)]
    nnz = weight.row_nnz
    if plan.row_order != "given":   # heavy programs first: a shorter tail
        groups.sort(key=lambda rows: -int(sum(nnz[r] for r in rows)))
    G = len(groups)
    rows_buf = np.full(G * R, -1, np.int32)
    lengths = np.zeros(G * R, np.int32)
    for g, rows in enumerate(groups):
        rows_buf[g * R:g * R + len(rows)] = rows
        lengths[g * R:g * R + len(rows)] = nnz[rows]
    segments = [np.arange(weight.indptr[r], weight.indptr[r + 1]) for r in rows_buf if r >= 0]
    if taps > 1:   # each row's nonzeros by (tap, c_in): one segment per tap
        segments = [seg[np.argsort(weight.indices[seg] % taps, kind="stable")]
                    for seg in segments]
        per_tap = np.zeros((G * R, taps), np.int32)
        live = rows_buf >= 0
        per_tap[live] = [np.bincount(weight.indices[seg] % taps, minlength=taps)
                         for seg in segments]
        lengths = per_tap.reshape(-1)
    starts = np.zeros(lengths.shape[0], np.int32)
    starts[1:] = np.cumsum(lengths)[:-1]
    ahead = 3 if plan.prefetch_x else 1     # chunks a prefetch reads past a segment
    value_index = np.concatenate(segments + [np.full(ahead * U, -1, np.int64)])
    hit = value_index >= 0
    cols = np.zeros(value_index.shape[0], np.int32)
    if offsets is not None:   # a convolution's input: each column's offset (and tap) into it
        if offsets.size and int(offsets.max()) > np.iinfo(np.int32).max:
            raise ValueError("the padded input is too large for 32-bit offsets "
                             f"({int(offsets.max())} elements in one image)")
        cols[hit] = offsets[weight.indices[value_index[hit]]]
    else:
        cols[hit] = weight.indices[value_index[hit]] // taps
    return Table(rows_buf, starts, lengths, cols, value_index, G, True)


def _table_union(weight: SparseWeight, plan: Plan) -> Table:
    R, U = plan.rows_per_program, plan.chunk
    groups = []
    for rows in _group_rows(weight, plan):
        cols = np.unique(np.concatenate(
            [weight.indices[weight.indptr[r]:weight.indptr[r + 1]] for r in rows]
            + [np.zeros(0, np.int64)]))
        groups.append((rows, cols))
    if plan.row_order != "given":
        groups.sort(key=lambda g: -len(g[1]))
    G = len(groups)
    rows_buf = np.full(G * R, -1, np.int32)
    starts = np.zeros(G + 1, np.int32)
    lengths = np.zeros(G, np.int32)
    for g, (rows, cols) in enumerate(groups):
        rows_buf[g * R:g * R + len(rows)] = rows
        lengths[g] = len(cols)
        starts[g + 1] = starts[g] + -(-len(cols) // U) * U
    total = int(starts[-1])
    col_buf = np.zeros(total, np.int32)
    value_index = np.full(total * R, -1, np.int64)
    for g, (rows, cols) in enumerate(groups):
        s = starts[g]
        col_buf[s:s + len(cols)] = cols
        for r_local, row in enumerate(rows):
            lo, hi = weight.indptr[row], weight.indptr[row + 1]
            j = np.searchsorted(cols, weight.indices[lo:hi])
            value_index[(s + j) * R + r_local] = np.arange(lo, hi)
    return Table(rows_buf, starts, lengths, col_buf, value_index, G, False)


def specialise(weight: SparseWeight, plan: Plan, taps: int = 1,
               offsets: Optional[np.ndarray] = None):
    """The layout of ``weight`` for ``plan``; ``taps`` = kh * kw for a convolution; ``offsets``
    (``pad_input``): each column's offset into the padded input, which the table then holds."""
    if plan.mode == "table":
        return specialise_table(weight, plan, taps, offsets)
    if plan.bitmap_tiles:
        from .bitmap import specialise_bitmap
        return specialise_bitmap(weight, plan)
    if plan.mode == "blocks":
        from .blocks import specialise_blocks
        return specialise_blocks(weight, plan)
    return specialise_unrolled(weight, plan)
