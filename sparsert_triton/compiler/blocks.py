"""The ``blocks`` layout: row blocks of padded nonzero lists with 16-bit column indices.

For the memory-bound products (few columns N, half-precision weights) the time is the weight's
bytes over HBM bandwidth. This layout stores each nonzero as its value (the weight's dtype) and
its column index (int16 where K <= 32767, else int32): 4 bytes per nonzero in fp16, against
2 bytes per position for the dense weight, so it moves fewer bytes below ~50% density.

Rows are cut into blocks of ``R = rows_per_program`` rows (in ``row_order``). A block's rows are
padded to its longest row, rounded up to whole steps of ``U = chunk`` nonzeros, and stored step
by step: entry ``(step s, row r, slot u)`` of block ``b`` is at ``BASE[b] + (s * R + r) * U + u``,
so one step of a block is one contiguous ``R x U`` load of columns and one of values. Pad slots
hold column -1 (the kernel masks their X loads, so NaN or inf in X reaches only the rows that
have a nonzero in its column) and value 0.

    acc[r, n] = sum over steps s, slots u of VALS[s, r, u] * X[COLS[s, r, u], n]

A block's steps may be cut into ``split_k`` ranges, each its own program (see
``render/blocks.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import Plan
from ..weights import SparseWeight

#: int16 column indices reach columns up to this; wider matrices use int32
INT16_COLS = 32767


@dataclass(frozen=True, eq=False)
class Blocks:
    rows: np.ndarray          # int32, blocks * R: each block's output rows (-1: pad)
    base: np.ndarray          # int32, blocks: first entry of each block
    steps: np.ndarray         # int32, blocks: steps of U nonzeros per row in each block
    cols: np.ndarray          # int16 or int32, entries: column index, -1 in pad slots
    value_index: np.ndarray   # int64, entries: index into the weight's CSR values, -1 in pads

    @property
    def blocks(self) -> int:
        return int(self.base.shape[0])


def block_rows(weight: SparseWeight, plan: Plan) -> np.ndarray:
    """The rows in block order (``row_order``: ``given``, or ``nnz``: longest first, so rows
    of similar length share a block and pad less), padded with -1 to whole blocks."""
    R = plan.rows_per_program
    order = np.arange(weight.M)
    if plan.row_order != "given":
        order = np.argsort(-weight.row_nnz, kind="stable")
    rows = np.full(-(-weight.M // R) * R, -1, np.int64)
    rows[:weight.M] = order
    return rows


def block_steps(lengths: np.ndarray, R: int, U: int) -> np.ndarray:
    """Steps of ``U`` nonzeros in each block: its longest row over ``U``, rounded up
    (``lengths``: row lengths in block order, whole blocks of ``R``)."""
    return -(-lengths.reshape(-1, R).max(axis=1) // U)


def stored_entries(row_nnz: np.ndarray, R: int, U: int, by_length: bool) -> int:
    """Entries the layout stores (nonzeros plus padding) for rows of ``row_nnz`` nonzeros in
    blocks of ``R`` rows and steps of ``U``: each block holds ``R x U x ceil(longest / U)``.
    ``by_length``: rows sorted longest first (``row_order="nnz"``), else in the given order."""
    n = np.sort(row_nnz)[::-1] if by_length else np.asarray(row_nnz)
    n = np.concatenate([n, np.zeros(-len(n) % R, n.dtype)])
    return int(block_steps(n, R, U).sum()) * R * U if n.size else 0


def default_row_order(weight: SparseWeight, R: int, U: int) -> str:
    """``nnz`` where sorting rows by length stores at least 10% fewer entries (uneven rows: a
    block is padded to its longest row; the kernel at N = 1 is bound by these bytes), else
    ``given`` (consecutive output rows per block; uniform masks differ by a few percent)."""
    given = stored_entries(weight.row_nnz, R, U, False)
    return "nnz" if stored_entries(weight.row_nnz, R, U, True) <= 0.9 * given else "given"


def specialise_blocks(weight: SparseWeight, plan: Plan) -> Blocks:
    R, U = plan.rows_per_program, plan.chunk
    rows = block_rows(weight, plan)
    nb = rows.shape[0] // R
    live = rows >= 0
    length = np.zeros(rows.shape[0], np.int64)
    length[live] = weight.row_nnz[rows[live]]
    steps = block_steps(length, R, U)
    width = steps * U                                              # padded row length
    base = np.zeros(nb, np.int64)
    base[1:] = np.cumsum(R * width)[:-1]
    total = int((R * width).sum())
    value_index = np.full(total, -1, np.int64)
    # entry of the j-th nonzero of block row r (block b, row in block i):
    # base[b] + ((j // U) * R + i) * U + j % U
    row_of = np.repeat(np.arange(rows.shape[0]), length)           # block-row slot per nonzero
    start = np.zeros(rows.shape[0], np.int64)
    start[live] = weight.indptr[rows[live]]
    j = np.arange(row_of.shape[0]) - np.repeat(np.cumsum(length) - length, length)
    b, i = row_of // R, row_of % R
    at = base[b] + ((j // U) * R + i) * U + j % U
    value_index[at] = start[row_of] + j
    col_dtype = np.int16 if weight.K <= INT16_COLS else np.int32
    cols = np.full(total, -1, col_dtype)
    hit = value_index >= 0
    cols[hit] = weight.indices[value_index[hit]]
    if total == 0:        # an all-zero weight: one pad entry, so no buffer is empty
        cols, value_index = np.full(1, -1, col_dtype), np.full(1, -1, np.int64)
    return Blocks(rows.astype(np.int32), base.astype(np.int32), steps.astype(np.int32), cols,
                  value_index)


def auto_split(blocks: int, column_tiles: int, steps: int, programs: int = 528) -> int:
    """Programs per row block along its steps: enough for ``programs`` in all (4 per SM of an
    H100: the memory-bound products need many loads in flight), at most 16 and at most one
    per 2 steps of the longest block."""
    want = -(-programs // max(1, blocks * column_tiles))
    return int(max(1, min(want, 16, steps // 2)))
