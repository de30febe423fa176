"""Lower: a specialised layout becomes kernel IR (statements per function, functions per kernel).

The unrolled modes lower to:

* one ``Part`` function per set of rows: ``x = X[col, n-tile]`` once per column of their
  union, then ``acc_r += w * x`` for every row ``r`` of the part with a nonzero in that column
  (``w`` a literal in ``values`` mode, ``V[i]`` in ``indices`` mode); then the epilogue and a
  store per row. Functions take scalars only and return nothing (what triton 3.6 compiles);
* one ``Group`` function per row group (one program): calls its parts;
* kernels that dispatch ``program_id(0)`` to group functions with a balanced ``if`` tree.

With ``split_k`` > 1 a group's columns are cut into slices: one group function (program) per
slice, whose parts store partial sums (``PartialStore``) in a workspace; the slice that
arrives last on a column tile calls the group's ``FixFn`` (sum of the partials in slice
order, the epilogue, the store).

The table mode lowers to one fixed loop kernel (``TableKernel``), the blocks mode to one
(``BlocksKernel``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from dsl import ir

from .plan import Plan, Signature
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
class PartialStore:
    """A column slice's partial sums of one row: ``WS[slot, tile] = acc``."""
    acc: str
    slot: int                     # row * split_k + slice


@dataclass(frozen=True)
class FixRow:
    """The last slice of a tile: ``Y[row, tile] = epilogue(sum of WS[slot, tile])`` over the
    slots of the slices that hold nonzeros of the row, in slice order (none: zeros)."""
    row: int
    slots: Tuple[int, ...]


@dataclass(frozen=True)
class FixFn:
    name: str
    rows: Tuple[FixRow, ...]


@dataclass(frozen=True)
class PartFn:
    name: str
    body: Tuple[Union[LoadX, Fma, Store, PartialStore], ...]


@dataclass(frozen=True)
class GroupFn:
    name: str
    calls: Tuple[str, ...]        # its parts, called in order
    # a column slice (split_k): (global group index, split_k, its FixFn's name); the program
    # counts its arrival and the last of the group's slices on a tile calls the fix function
    arrive: Optional[Tuple[int, int, str]] = None


@dataclass(frozen=True)
class UnrolledKernel:
    name: str
    parts: Tuple[PartFn, ...]
    groups: Tuple[GroupFn, ...]
    fixes: Tuple[FixFn, ...] = ()


@dataclass(frozen=True)
class TableKernel:
    name: str


@dataclass(frozen=True)
class BlocksKernel:
    """The ``blocks`` mode's one loop kernel over row blocks (``blocks.Blocks``)."""
    name: str
    M: int                        # output rows (the split workspace's slice height)


@dataclass(frozen=True)
class Lowered:
    """Everything the renderer needs: kernels plus the epilogue and call signature."""
    plan: Plan
    signature: Signature
    program: ir.Program
    kernels: Tuple[Union[UnrolledKernel, TableKernel, BlocksKernel], ...]
    conv: Optional[object] = None          # ConvGeometry of a convolution, None for W @ X
    x_strides: Optional[Tuple[int, ...]] = None   # X's strides when baked into the code


def _lower_part(name: str, part, rows, mode: str, weight_values, split: int = 1) -> PartFn:
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
        if split > 1:       # every row of a slice's part has a nonzero in the slice
            body.append(PartialStore(acc, int(rows[r_local]) * split + part.slice))
        else:
            body.append(Store(acc if acc in seen else None, int(rows[r_local])))
    return PartFn(name, tuple(body))


def _lower_split_group(g: int, group, plan: Plan, weight_values, parts: list):
    """A group cut into column slices: one GroupFn per slice, and the group's FixFn."""
    S, fix = group.split, f"_g{g}_fix"
    calls = [[] for _ in range(S)]
    has = [set() for _ in range(S)]      # local rows with nonzeros in each slice
    for p, part in enumerate(group.parts):
        fn = _lower_part(f"_g{g}_s{part.slice}_p{p}", part, group.rows, plan.mode,
                         weight_values, S)
        parts.append(fn)
        calls[part.slice].append(fn.name)
        has[part.slice].update(part.rows)
    fns = [GroupFn(f"_g{g}_s{s}", tuple(calls[s]), (g, S, fix)) for s in range(S)]
    rows = tuple(FixRow(int(row), tuple(int(row) * S + s for s in range(S) if r in has[s]))
                 for r, row in enumerate(group.rows))
    return fns, FixFn(fix, rows)


def lower(layout, plan: Plan, signature: Signature, program: ir.Program, conv=None,
          x_strides=None) -> Lowered:
    if isinstance(layout, Table):
        return Lowered(plan, signature, program, (TableKernel("sparse_table_kernel"),), conv,
                       x_strides)
    if isinstance(layout, Blocks):
        M = int(layout.rows.max()) + 1 if layout.rows.size else 0
        return Lowered(plan, signature, program, (BlocksKernel("sparse_blocks_kernel", M),),
                       conv, x_strides)
    assert isinstance(layout, Unrolled)
    kernels = []
    for k, (start, stop) in enumerate(layout.kernels):
        parts, groups, fixes = [], [], []
        for g in range(start, stop):
            group = layout.groups[g]
            if group.split > 1:
                fns, fix = _lower_split_group(g, group, plan, layout.packed_values, parts)
                groups.extend(fns)
                fixes.append(fix)
                continue
            calls = []
            for p, part in enumerate(group.parts):
                fn = _lower_part(f"_g{g}_p{p}", part, group.rows, plan.mode, layout.packed_values)
                parts.append(fn)
                calls.append(fn.name)
            groups.append(GroupFn(f"_g{g}", tuple(calls)))
        kernels.append(UnrolledKernel(f"sparse_kernel_{k}", tuple(parts), tuple(groups),
                                      tuple(fixes)))
    return Lowered(plan, signature, program, tuple(kernels), conv, x_strides)
