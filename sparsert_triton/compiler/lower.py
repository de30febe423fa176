"""Lower: a specialised layout becomes kernel IR (statements per function, functions per kernel).

The unrolled modes lower to:

* one ``Part`` function per set of rows: ``x = X[col, n-tile]`` once per column of their
  union, then ``acc_r += w * x`` for every row ``r`` of the part with a nonzero in that column
  (``w`` a literal in ``values`` mode, ``V[i]`` in ``indices`` mode); then the epilogue and a
  store per row. Functions take scalars only and return nothing (what triton 3.6 compiles);
* one ``Group`` function per row group (one program): calls its parts;
* kernels that dispatch ``program_id(0)`` to group functions with a balanced ``if`` tree.

The table mode lowers to one fixed loop kernel (``TableKernel``), the blocks mode to one
(``BlocksKernel``), the bitmap mode to one (``BitmapKernel``), the expand mode to one
(a ``BitmapKernel`` whose programs expand the layout into dense tiles, then multiply them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from dsl import ir

from .plan import Plan, Signature
from .bitmap import Bitmap
from .blocks import Blocks
from .specialise import Table, Unrolled


@dataclass(frozen=True)
class LoadX:
    var: str
    col: int


@dataclass(frozen=True)
class Fma:
    acc: str
    var: str
    value: Optional[float]       # literal weight (values mode)
    value_index: Optional[int]   # index into the packed value buffer (indices mode)
    first: bool                  # first contribution: acc = w * x


@dataclass(frozen=True)
class Store:
    acc: Optional[str]            # None: the row has no nonzeros (epilogue of zeros)
    row: int                      # global output row


@dataclass(frozen=True)
class PartFn:
    name: str
    body: Tuple[Union[LoadX, Fma, Store], ...]


@dataclass(frozen=True)
class GroupFn:
    name: str
    calls: Tuple[str, ...]        # its parts, called in order


@dataclass(frozen=True)
class UnrolledKernel:
    name: str
    parts: Tuple[PartFn, ...]
    groups: Tuple[GroupFn, ...]


@dataclass(frozen=True)
class TableKernel:
    name: str
    K: int = 0                    # positions along K (the transposing kernel's X rows)


@dataclass(frozen=True)
class BlocksKernel:
    """The ``blocks`` mode's one loop kernel over row blocks (``blocks.Blocks``)."""
    name: str
    M: int                        # output rows (the split workspace's slice height)


@dataclass(frozen=True)
class BitmapKernel:
    """A loop kernel over the row blocks and K tiles of the bitmap layout (``bitmap.Bitmap``):
    the ``bitmap`` mode's kernel, or the ``expand`` mode's (the expansion into dense tiles and
    the tensor-core product with them)."""
    name: str
    M: int                        # output rows
    K: int                        # positions along K (the last tile's X rows are masked)
    k_tiles: int                  # tiles along K per row block


@dataclass(frozen=True)
class Lowered:
    """Everything the renderer needs: kernels plus the epilogue and call signature."""
    plan: Plan
    signature: Signature
    program: ir.Program
    kernels: Tuple[Union[UnrolledKernel, TableKernel, BlocksKernel, BitmapKernel], ...]
    conv: Optional[object] = None          # ConvGeometry of a convolution, None for W @ X
    x_strides: Optional[Tuple[int, ...]] = None   # X's strides when baked into the code


def _lower_part(name: str, part, rows, mode: str, weight_values) -> PartFn:
    body, seen = [], set()
    for j, (col, entries) in enumerate(part.columns):
        var = f"x{j}"
        body.append(LoadX(var, col))
        for r_local, packed in entries:
            acc = f"a{r_local}"
            if mode == "values":
                body.append(Fma(acc, var, float(weight_values[packed]), None, acc not in seen))
            else:
                body.append(Fma(acc, var, None, packed, acc not in seen))
            seen.add(acc)
    for r_local in part.rows:
        acc = f"a{r_local}"
        body.append(Store(acc if acc in seen else None, int(rows[r_local])))
    return PartFn(name, tuple(body))


def lower(layout, plan: Plan, signature: Signature, program: ir.Program, conv=None,
          x_strides=None, shape: Tuple[int, int] = None) -> Lowered:
    """``shape``: the weight's (M, K) (the bitmap kernel bakes both in)."""
    if isinstance(layout, Bitmap) and plan.mode == "expand":
        M, K = shape
        return Lowered(plan, signature, program,
                       (BitmapKernel("sparse_expand_kernel", M, K, layout.k_tiles),), conv,
                       x_strides)
    if isinstance(layout, Bitmap):
        M, K = shape
        return Lowered(plan, signature, program,
                       (BitmapKernel("sparse_bitmap_kernel", M, K, layout.k_tiles),), conv,
                       x_strides)
    if isinstance(layout, Table):
        K = shape[1] if shape is not None else 0
        return Lowered(plan, signature, program, (TableKernel("sparse_table_kernel", K),), conv,
                       x_strides)
    if isinstance(layout, Blocks):
        M = int(layout.rows.max()) + 1 if layout.rows.size else 0
        return Lowered(plan, signature, program, (BlocksKernel("sparse_blocks_kernel", M),),
                       conv, x_strides)
    assert isinstance(layout, Unrolled)
    kernels = []
    for k, (start, stop) in enumerate(layout.kernels):
        parts, groups = [], []
        for g in range(start, stop):
            group = layout.groups[g]
            calls = []
            for p, part in enumerate(group.parts):
                fn = _lower_part(f"_g{g}_p{p}", part, group.rows, plan.mode, layout.packed_values)
                parts.append(fn)
                calls.append(fn.name)
            groups.append(GroupFn(f"_g{g}", tuple(calls)))
        kernels.append(UnrolledKernel(f"sparse_kernel_{k}", tuple(parts), tuple(groups)))
    return Lowered(plan, signature, program, tuple(kernels), conv, x_strides)
