"""Lower: a specialised layout becomes kernel IR (statements per function, functions per kernel).

The unrolled modes lower to:

* one ``Part`` function per run of columns: ``x = X[col, n-tile]`` once per column, then
  ``acc_r += w * x`` for every row ``r`` of the group with a nonzero in that column (``w`` a
  literal in ``values`` mode, ``V[i]`` in ``indices`` mode); it returns its accumulators;
* one ``Group`` function per row group: sums its parts' accumulators, applies the epilogue
  and stores each row;
* kernels that dispatch ``program_id(0)`` to group functions with a balanced ``if`` tree.

The table mode lowers to one fixed loop kernel (``TableKernel``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from dsl import ir

from .plan import Plan, Signature
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
class PartFn:
    name: str
    body: Tuple[Union[LoadX, Fma], ...]
    returns: Tuple[str, ...]      # accumulator names, one per touched local row


@dataclass(frozen=True)
class GroupFn:
    name: str
    rows: Tuple[int, ...]                        # global row of each local accumulator
    calls: Tuple[Tuple[str, Tuple[int, ...]], ...]  # (part name, local rows it returns)


@dataclass(frozen=True)
class UnrolledKernel:
    name: str
    parts: Tuple[PartFn, ...]
    groups: Tuple[GroupFn, ...]


@dataclass(frozen=True)
class TableKernel:
    name: str


@dataclass(frozen=True)
class Lowered:
    """Everything the renderer needs: kernels plus the epilogue and call signature."""
    plan: Plan
    signature: Signature
    program: ir.Program
    kernels: Tuple[Union[UnrolledKernel, TableKernel], ...]


def _lower_part(name: str, part, mode: str, weight_values) -> PartFn:
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
    rows = part.rows
    return PartFn(name, tuple(body), tuple(f"a{r}" for r in rows))


def lower(layout, plan: Plan, signature: Signature, program: ir.Program) -> Lowered:
    if isinstance(layout, Table):
        return Lowered(plan, signature, program, (TableKernel("sparse_table_kernel"),))
    assert isinstance(layout, Unrolled)
    kernels = []
    for k, (start, stop) in enumerate(layout.kernels):
        parts, groups = [], []
        for g in range(start, stop):
            group = layout.groups[g]
            calls = []
            for p, part in enumerate(group.parts):
                fn = _lower_part(f"_g{g}_p{p}", part, plan.mode, layout.packed_values)
                parts.append(fn)
                calls.append((fn.name, part.rows))
            groups.append(GroupFn(f"_g{g}", group.rows, tuple(calls)))
        kernels.append(UnrolledKernel(f"sparse_kernel_{k}", tuple(parts), tuple(groups)))
    return Lowered(plan, signature, program, tuple(kernels))
