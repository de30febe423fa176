"""The per-call fast path of a specialised kernel: everything decided once per call layout.

A call ``k(X, *operands)`` is validated, given a :class:`~sparsert_triton.compiler.plan.Signature`,
matched to a compiled variant and turned into launch arguments. All of that is a function of
the call's *layout*: X's type, shape, strides, dtype and device, each operand's kind (a
number, or a tensor's shape, strides, dtype and device) and, for CPU tensors, whether the
Triton interpreter is on. :func:`call_key` is that layout; a :class:`CallPlan` holds what was
decided for it, so a later call with the same key skips the checks and the lookups:

* it re-checks only what the key does not fix: that number operands are finite, and the
  16-byte alignment of every pointer (Triton specialises compiled kernels on it: the
  compiled kernels are kept per alignment pattern);
* it allocates Y, assembles the arguments (every pointer as its integer address) and
  launches the compiled kernels directly (:meth:`CallPlan.launch`,
  :func:`sparsert_triton.runtime.direct.run_compiled`), on X or on the copy the variant reads
  instead (``pad_input``'s padded X, ``tap_masks``' contiguous one: made per call, of a
  layout fixed by X's); kernels it has not seen launched with these facts, several streams
  and the interpreter go through :func:`sparsert_triton.runtime.launch.run`, the general
  path.

:meth:`CallPlan.launch` also serves ``SparseLinear``'s eager calls of an input layout seen
before, which hand it the input's and a fresh output's addresses without the views a matrix
call takes (:meth:`sparsert_triton.ops.SparsePattern.record_rows_call`).

Calls with ``out=`` are not planned (the output's address is checked against X's on every
call), and neither are tensors of other types (subclasses, sparse layouts): those take the
checked path each time.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ..compiler.compile import interpreting
from .direct import launches_of, run_compiled, spec_key
from .launch import (call_buffers, captured_args, captured_call, grids, operand_args, run,
                     size_args, workspace_buffers, workspace_sizes)
from .workspace import capturing, generation

#: tensor types whose calls are planned (a subclass may change what the checks see)
PLAIN = (torch.Tensor, torch.nn.Parameter)
#: planned layouts kept per kernel before the oldest half is dropped (N varies in some loops)
MAX_PLANS = 64


def tensor_layout(t: torch.Tensor) -> Optional[tuple]:
    """(shape, strides, dtype, device) of a plain strided tensor, else None."""
    if type(t) not in PLAIN or t.layout is not torch.strided:
        return None
    return (t.shape, t.stride(), t.dtype, t.device)


def call_key(X, operands) -> Optional[tuple]:
    """The layout of a call (what its checks, signature, variant and launch arguments depend
    on), or None if the call must take the checked path every time."""
    x = tensor_layout(X) if isinstance(X, torch.Tensor) else None
    if x is None:
        return None
    parts = [x, interpreting() if x[3].type != "cuda" else None]
    for v in operands:
        if isinstance(v, torch.Tensor):
            t = tensor_layout(v)
            if t is None:
                return None
            parts.append(t)
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            parts.append(type(v))      # passed by value: checked per call
        else:
            return None
    return tuple(parts)


class CallPlan:
    """What a call of one layout runs, decided by a checked call of that layout."""

    def __init__(self, variant, sig, X: torch.Tensor, Y: torch.Tensor, operands,
                 read: Optional[torch.Tensor] = None):
        """``read``: the tensor the kernels read for X where it is not X itself (the padded
        copy of ``pad_input``, the contiguous one of ``tap_masks``): made per call, its
        layout (contiguous, a shape fixed by X's) is fixed by the call's."""
        self.variant, self.sig = variant, sig
        # whether each call makes the X the kernels read (``prepare``) before launching
        self.prepared = read is not None and read is not X
        read = X if read is None else read
        self.shape, self.dtype, self.device = tuple(Y.shape), Y.dtype, X.device
        self.cuda = X.device.type == "cuda"
        # Y is allocated contiguous on every call, or as the transpose of a contiguous
        # tensor (a matrix kernel's ``rows_out``): then with its strides in one op
        # (empty_strided, not empty(...).t(): a planned rows_out call runs as many aten ops
        # as a plain one)
        rows_out = Y.dim() == 2 and Y.shape[0] > 1 and Y.stride(0) == 1 \
            and Y.stride(1) == Y.shape[0]
        self.strides = tuple(Y.stride()) if rows_out else None
        self.sizes = tuple(size_args(read, Y))
        self.numbers = [i for i, v in enumerate(operands) if not isinstance(v, torch.Tensor)]
        self.tensors = [i for i, v in enumerate(operands) if isinstance(v, torch.Tensor)]
        # the operands' launch arguments: their strides are fixed by the layout; the tensors
        # and the numbers' values are filled in per call
        conv = X.dim() == 4
        self.op_args, self.op_fill = [], []     # (position, operand index, is a number)
        for i, (kind, v) in enumerate(zip(sig.operand_kinds, operands)):
            self.op_fill.append((len(self.op_args), i, kind[1] == "number"))
            self.op_args += operand_args(_One(kind), (v,), conv)   # the value comes first
        # one operand tensor (a bias): its launch arguments are the tensor between fixed
        # ones, and those after it joined with the sizes once here
        self.one_tensor = None
        if len(self.op_fill) == 1 and not self.op_fill[0][2]:
            pos, i = self.op_fill[0][0], self.op_fill[0][1]
            self.one_tensor = (i, tuple(self.op_args[:pos]),
                               (*self.op_args[pos + 1:], *self.sizes))
        plan = variant.plan
        # the variants whose launch needs only X (or its prepared copy), the variant's
        # buffers, Y and the operands
        self.direct = not (plan.streams > 1 and len(variant.kernels) > 1 and X.is_cuda)
        # the kernels and grids of an eager call ([False]) and of a captured one ([True]: the
        # expand mode's two launches, where a CUDA graph captures the call)
        self.forms = variant.captured is not None and self.cuda
        self.grids = {c: [(fn, _grid3(g)) for fn, g in grids(variant, self.sizes[-1], c)]
                      for c in ((False, True) if self.forms else (False,))}
        # buffers made per call after the variant's (a row-block mode's K slices: a workspace
        # and zeroed counters)
        self.per_call = plan.row_blocks and plan.split_k > 1
        # the scratch and counters of the expand mode and the transposing table kernel:
        # (elements, counters, dtype), from the kept workspace (made per call under capture)
        sizes = workspace_sizes(variant, *X.shape) if X.dim() == 2 else None
        self.scratch = (*sizes, X.dtype) if sizes is not None else None
        self.watches_capture = self.cuda and (self.forms or plan.transpose_x)
        self._ws = None          # (stream, workspace generation, buffer addresses)
        # per form (False, True), the alignment of X, Y and the operand tensors -> launches
        self.compiled = ({}, {})
        self.buffers = None      # the variant's device buffers (made once per device)
        self.buffer_ptrs = ()    # their addresses

    def check_numbers(self, operands):
        for i in self.numbers:
            v = operands[i]
            if not math.isfinite(v):
                name = self.sig.operand_kinds[i][0]
                raise ValueError(f"{name} must be finite, got {v}")

    def __call__(self, X: torch.Tensor, operands, prepare) -> torch.Tensor:
        """Run the call; ``prepare(X, plan)`` gives the X the kernels read (a padded or
        contiguous copy for the variants that need one) on the general path."""
        if self.numbers:
            self.check_numbers(operands)
        if self.strides is None:
            Y = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        else:
            Y = torch.empty_strided(self.shape, self.strides, dtype=self.dtype,
                                    device=self.device)
        v = self.variant
        if self.prepared:
            X = prepare(X, v.plan)
        if not (self.direct and v.launcher.enabled):
            run(v, X, Y, operands, self.sig)
            return Y
        if self.launch(X, X.data_ptr(), Y.data_ptr(), operands):
            return Y
        args = run(v, X, Y, operands, self.sig)      # compiles or finds the kernels
        captured = captured_call(v, X)
        forms = [(captured, args)]
        if self.forms and not captured:    # run() compiled the captured kernels as well
            forms.append((True, captured_args(v, args)))
        at = self.alignment(X.data_ptr(), Y.data_ptr(), operands)
        for c, a in forms:
            spec = spec_key(a)
            found = [(v.launcher.compiled(fn, self.device, spec), g) for fn, g in self.grids[c]]
            if all(k is not None for k, _ in found):
                self.compiled[c][at] = launches_of(found)
        if self.buffers is None and any(at in launches for launches in self.compiled):
            self.buffers = v.buffers(self.device)
            self.buffer_ptrs = tuple(b.data_ptr() for b in self.buffers)
        return Y

    def alignment(self, xp: int, yp: int, operands) -> tuple:
        """The 16-byte alignment of X's, Y's and the operand tensors' addresses: the facts
        Triton specialises the compiled kernels on besides the layout."""
        tensors = self.tensors
        if not tensors:
            return (xp % 16 == 0, yp % 16 == 0)
        if len(tensors) == 1:
            return (xp % 16 == 0, yp % 16 == 0, operands[tensors[0]].data_ptr() % 16 == 0)
        return (xp % 16 == 0, yp % 16 == 0,
                *[operands[i].data_ptr() % 16 == 0 for i in tensors])

    def launch(self, X: torch.Tensor, xp: int, yp: int, operands) -> bool:
        """Launch the compiled kernels of this call's alignment on X at address ``xp`` (X, or a
        tensor of its dtype and device that views the same memory) into the output at address
        ``yp`` (laid out as this plan's Y); False, launching nothing, where no kernel was
        compiled for that alignment yet or the variant's launcher is off. Every pointer goes
        as its integer address (what Triton's launcher does with a tensor after asking it and
        the driver for one); the tensors stay referenced by the caller until the launch is
        queued, and so do the variant's buffers (allocated once per device: only X, Y and the
        operands move)."""
        launcher = self.variant.launcher
        if not launcher.enabled:
            return False
        # whether X's stream is being captured, where the call depends on it (the expand
        # mode's captured kernels; the kept workspace, which a capture does not use)
        captured = self.watches_capture and capturing()
        launches = self.compiled[captured and self.forms].get(self.alignment(xp, yp, operands))
        if launches is None:
            return False
        stream = launcher.stream_of(self.device)
        made = None
        if self.scratch is not None:
            bufs, made = self.workspace(stream, captured)
        elif self.per_call:
            made = call_buffers(self.variant, X, self.shape[0], self.sizes[-1], self.sig)
            bufs = (*self.buffer_ptrs, *[b.data_ptr() for b in made])
        else:
            bufs = self.buffer_ptrs
        one = self.one_tensor
        if one is not None:
            run_compiled(launches, (xp, *bufs, yp, *one[1], operands[one[0]].data_ptr(),
                                    *one[2]), stream)
            return True
        ops = self.op_args
        if self.op_fill:
            ops = list(ops)
            for pos, i, number in self.op_fill:
                ops[pos] = float(operands[i]) if number else operands[i].data_ptr()
        run_compiled(launches, (xp, *bufs, yp, *ops, *self.sizes), stream)
        return True

    def workspace(self, stream: int, captured: bool) -> tuple:
        """The variant's buffer addresses, then the scratch's (the expand mode's dense tiles,
        the transposing kernel's XT) and the counters' for a call on ``stream``; and the
        tensors made for this call (under capture, or on the CPU), which the caller holds
        until its launch is queued (XT freed before the counters are made could hand them its
        memory). The kept buffers' addresses are remembered per stream until this thread's
        workspace changes (:func:`~.workspace.generation`)."""
        on = stream if self.cuda else None
        if on is not None and not captured:
            ws = self._ws
            if ws is not None and ws[0] == on and ws[1] is generation():
                return ws[2], None
        made = workspace_buffers(self.variant, *self.scratch, self.device, on, captured)
        bufs = (*self.buffer_ptrs, *[t.data_ptr() for t in made])
        if on is not None and not captured:
            self._ws = (on, generation(), bufs)
        return bufs, made


class _One:
    """A signature of one operand, for :func:`operand_args`."""

    def __init__(self, kind):
        self.operand_kinds = (kind,)


def _grid3(grid) -> tuple:
    return (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
