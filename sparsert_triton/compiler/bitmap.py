"""The ``bitmap`` layout: tiles of a bit per weight position plus the tile's nonzero values.

Where the weight is not very sparse, a column index per nonzero (``blocks.py``: 2 bytes) costs
more than a bit per position. This layout cuts ``W`` into tiles of ``R = rows_per_program``
rows and ``T = chunk`` positions along K (``T`` a multiple of 32, at most 256) and stores, per
tile ``t`` and tile row ``i``:

* ``BITS[t, i, w]`` (int32): bit ``j`` of word ``w`` is set where ``W[row, k]`` is a nonzero,
  ``k = t_k * T + 32 * w + j``;
* ``WOFF[t, i, w]`` (uint8): the row's nonzeros in the tile before word ``w`` (at most 224);
* ``ROFF[t, i]`` (int16): the tile's nonzeros in rows before ``i`` (``R * T`` is at most 16384);
* ``TBASE[t]`` (int32): the tile's first value;
* the values, tile by tile, row by row, in column order.

so that the value at a set bit ``(t, i, w, j)`` is

    VALS[TBASE[t] + ROFF[t, i] + WOFF[t, i, w] + popc(BITS[t, i, w] & (2**j - 1))]

and the kernel (``render/bitmap.py``) decodes each position with a bit test and a ``popc``,
no scan across lanes. Per weight position it moves ``d * bytes(value) + 1/8 + 1/32`` bytes
(density ``d``) plus 2 bytes per tile row: in fp16, 1.16 bytes at 50% against dense's 2
and the blocks layout's ~2.3 (4 bytes per nonzero plus padding).

Tiles are stored row block by row block, K tile by K tile; a row block's tiles may be cut
into ``split_k`` ranges, each its own program (as in the blocks mode).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import Plan
from ..weights import SparseWeight


@dataclass(frozen=True, eq=False)
class Bitmap:
    bits: np.ndarray          # int32, tiles * R * T/32
    woff: np.ndarray          # uint8, tiles * R * T/32
    roff: np.ndarray          # int16, tiles * R
    tbase: np.ndarray         # int32, tiles
    value_index: np.ndarray   # int64, nnz: index into the weight's CSR values, in VALS order
    k_tiles: int              # tiles along K per row block

    @property
    def blocks(self) -> int:
        """Row blocks (programs along M)."""
        return int(self.tbase.shape[0]) // max(1, self.k_tiles)


def expansion_programs(blocks: int, k_tiles: int, programs: int = 528) -> int:
    """The expand mode's expansion kernel: programs per row block along its K tiles, enough for
    ``programs`` in all (4 per SM of an H100), whatever N (each tile is written once per call)."""
    return int(max(1, min(k_tiles, -(-programs // max(1, blocks)))))


def specialise_bitmap(weight: SparseWeight, plan: Plan) -> Bitmap:
    R, T = plan.rows_per_program, plan.chunk
    W = T // 32
    M, K = weight.M, weight.K
    nb, kt = -(-M // R), max(1, -(-K // T))
    row = np.repeat(np.arange(M), weight.row_nnz)
    col = weight.indices.astype(np.int64)
    csr = np.arange(weight.nnz)
    b, i = row // R, row % R                                      # row block, tile row
    t = b * kt + col // T                                         # tile
    w, j = (col % T) // 32, col % 32                              # word, bit
    word = (t * R + i) * W + w                                    # global word index
    words = nb * kt * R * W
    # each (word, bit) is set once: the sum of the bits' powers of two is their OR (exact
    # in float64 below 2**53)
    bits = np.bincount(word, weights=np.ldexp(1.0, j), minlength=words).astype(np.uint32)
    per_word = np.bincount(word, minlength=words).reshape(nb * kt, R, W)
    woff = np.cumsum(per_word, axis=2) - per_word
    per_row = per_word.sum(axis=2)
    roff = np.cumsum(per_row, axis=1) - per_row
    per_tile = per_row.sum(axis=1)
    tbase = np.cumsum(per_tile) - per_tile
    # values in (tile, tile row, column) order: CSR is (row, column) sorted, so a stable
    # sort by (tile, tile row) keeps each tile row's columns in order
    order = np.argsort(t * R + i, kind="stable")
    return Bitmap(bits.view(np.int32), woff.reshape(-1).astype(np.uint8),
                  roff.reshape(-1).astype(np.int16), tbase.astype(np.int32),
                  csr[order].astype(np.int64), kt)
