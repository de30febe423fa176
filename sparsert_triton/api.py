"""The public API: ``@sparse_kernel`` and the specialised kernel it makes.

The pipeline, one module per stage, each a pure function of its inputs::

    trace (dsl.trace) -> canonicalise -> specialise -> lower -> render -> compile -> launch

``SPARSERT_DUMP=dir`` writes every stage's output for each kernel variant built.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dsl import Schedule, ir, trace
from dsl.schedule import as_schedule

from .compiler import pipeline
from .compiler.canonicalise import canonicalise_program, plan_for
from .compiler.compile import import_kernels, interpreting
from .compiler.conv import ConvGeometry, conv_weight, geometry
from .compiler.plan import Plan, Signature
from .compiler.reference import evaluate
from .compiler.render import transposed
from .compiler.render.expand import CAPTURED, ONE_LAUNCH
from .runtime.arguments import INT32_MAX, conv_signature_for, signature_for
from .runtime.callplan import MAX_PLANS, CallPlan, call_key
from .runtime.direct import Launcher
from .runtime.launch import run
from .runtime.padding import zero_pad
from .runtime.workspace import create_blas_handle
from .weights import TORCH_DTYPES, SparseWeight, as_sparse_weight


def _capability(device: torch.device) -> str:
    if interpreting() or device.type != "cuda":
        return "interpreter"
    return "sm_%d%d" % torch.cuda.get_device_capability(device)


def _values_at(weight: SparseWeight, value_index: np.ndarray) -> np.ndarray:
    """The weight's values at a layout's entries (CSR positions; -1: a pad entry, value 0)."""
    vals = np.zeros(value_index.shape, np.float64)
    hit = value_index >= 0
    vals[hit] = weight.values[value_index[hit]]
    return vals


class Variant:
    """One compiled form of a specialised kernel: for one plan and one call signature."""

    def __init__(self, key: str, path: Path, layout: dict, plan: Plan, weight: SparseWeight):
        self.key, self.path, self.plan, self.launched = key, path, plan, False
        # the kernels a call captured in a CUDA graph runs instead of ``kernels`` (None: the
        # same ones)
        self.captured = None
        self.launcher = Launcher()
        self.launcher.enabled = not interpreting()   # the interpreter has no compiled kernels
        self.module = import_kernels(path, key)
        self.table = plan.mode == "table"
        if plan.bitmap_tiles:
            k_tiles = self.k_tiles = int(layout["k_tiles"])
            blocks = len(layout["tbase"]) // max(1, k_tiles)
            if plan.mode == "expand":     # one launch; two where a CUDA graph captures them
                self.kernels = [(getattr(self.module, ONE_LAUNCH), blocks)]
                self.captured = [(getattr(self.module, name), blocks) for name in CAPTURED]
            else:
                self.kernels = [(self.module.sparse_bitmap_kernel, blocks)]
            vals = _values_at(weight, layout["value_index"])
            self._host = [layout["bits"], layout["woff"], layout["roff"], layout["tbase"], vals]
        elif plan.mode == "blocks":
            self.kernels = [(self.module.sparse_blocks_kernel, len(layout["base"]))]
            vals = _values_at(weight, layout["value_index"])
            self._host = [layout["rows"], layout["base"], layout["steps"], layout["cols"], vals]
            self.cols_dtype = str(layout["cols"].dtype)
        elif self.table:
            self.kernels = [(self.module.sparse_table_kernel, int(layout["groups"]))]
            # the transposing kernel's programs per column tile that transpose X (grids)
            self.shares = transposed.shares(weight.K, plan) if plan.transpose_x else 0
            vals = _values_at(weight, layout["value_index"])
            self._host = [layout["rows"], layout["starts"], layout["lengths"], layout["cols"],
                          vals]
        else:
            self.kernels = [(getattr(self.module, f"sparse_kernel_{i}"), int(g))
                            for i, g in enumerate(layout["kernel_groups"])]
            self._host = [weight.values[layout["pack_order"]]]
        self.w_dtype = TORCH_DTYPES[weight.dtype]
        self._device_buffers = {}

    @property
    def source(self) -> str:
        return self.path.read_text()

    def buffers(self, device: torch.device):
        bufs = self._device_buffers.get(device)
        if bufs is None:
            bufs = []
            for i, a in enumerate(self._host):
                t = torch.from_numpy(np.ascontiguousarray(a))
                if a.dtype == np.float64:   # values travel in the weight's own dtype
                    t = t.to(self.w_dtype)
                if t.numel() == 0:          # never hand Triton an empty buffer
                    t = torch.zeros(1, dtype=t.dtype, device="cpu")
                bufs.append(t.to(device))
            self._device_buffers[device] = bufs
        return bufs


class SpecializedKernel:
    """A DSL program specialised to one sparse weight. Call it as ``k(X, *operands)``."""

    def __init__(self, program: ir.Program, schedule: Schedule, weight: SparseWeight,
                 conv: Optional[ConvGeometry] = None):
        self.program, self.schedule, self.weight, self.conv = program, schedule, weight, conv
        self._variants = {}
        self._by_call = {}
        self._calls = {}         # call_key -> CallPlan
        self._last: Optional[Variant] = None

    # -------------------------------------------------------------- building
    def plan(self, N: int, x_dtype: str = None, spatial=None) -> Plan:
        """The resolved schedule for N output columns (a convolution's input spatial size
        ``(H, W)`` where known: the default table kernel depends on it)."""
        fit = self.conv is not None and spatial is not None and self.conv.masks_fit(*spatial)
        return plan_for(self.schedule, self.weight, N, x_dtype or self.weight.dtype,
                        conv=self.conv is not None, tap_masks_fit=fit)

    def variant(self, sig: Signature, N: int, device: torch.device, x_strides=None,
                spatial=None) -> Variant:
        """The compiled form for a call; ``x_strides`` are X's strides (baked into the code
        when the plan says so), ``spatial`` a convolution input's (H, W) (the ``pad_input``
        layout depends on it)."""
        call = (sig, N, device, x_strides, spatial)
        fast = self._by_call.get(call)   # the per-call hot path
        if fast is not None:
            return fast
        v = self._build_variant(sig, N, device, x_strides, spatial)
        self._by_call[call] = v
        return v

    def _build_variant(self, sig: Signature, N: int, device: torch.device, x_strides,
                       spatial=None) -> Variant:
        """The compiler pipeline (``compiler/pipeline.py``): the plan for this call, then the
        cache entry (specialise -> lower -> render -> store on a miss), imported as a Variant."""
        target = pipeline.resolve(self.schedule, self.weight, self.conv, sig, N,
                                  _capability(device), x_strides, spatial)
        vkey = target.variant_key(sig)
        v = self._variants.get(vkey)
        if v is not None:
            return v
        key, path, arrays = pipeline.build(self.program, self.weight, self.conv, sig, target)
        v = Variant(key, path, arrays, target.plan, self.weight)
        self._variants[vkey] = v
        return v

    def _padded(self, X: torch.Tensor, pdl: bool = False) -> torch.Tensor:
        """X zero-padded by the convolution's padding, contiguous (``pad_input``; one copy
        kernel, none for padding 0 and a contiguous X)."""
        ph, pw = self.conv.padding
        B, C, H, W = X.shape
        shape = (B, C, *self.conv.padded_size(H, W))
        if B * C * shape[2] * shape[3] > INT32_MAX:
            raise ValueError(f"X padded to {shape} has more than 2**31 elements; split the "
                             "batch into smaller calls")
        return zero_pad(X, ph, pw, pdl) if ph or pw else X.contiguous()

    # -------------------------------------------------------------- running
    def __call__(self, X: torch.Tensor, *operands, out: Optional[torch.Tensor] = None,
                 rows_out: bool = False):
        """``epilogue(W @ X)`` for ``X`` of shape (K, N); for a convolution, ``epilogue(conv2d(X,
        W))`` for ``X`` of shape (B, C_in, H, W).

        The first call of each layout (X's shape, strides, dtype and device, the operands'
        kinds and layouts) is checked in full and leaves a :class:`CallPlan` that later calls
        of that layout run without repeating the checks (see
        :mod:`sparsert_triton.runtime.callplan`);
        calls with ``out=`` are checked every time. ``rows_out=True`` (matrix kernels) allocates
        Y as the transpose of a contiguous (N, M) tensor, so ``Y.t()`` is row-major (the
        kernel's stores then step by M along N)."""
        key = call_key(X, operands) if out is None else None
        if key is not None:
            if rows_out:
                key = (*key, "rows")
            plan = self._calls.get(key)
            if plan is not None:
                return plan(X, operands, self._kernel_input)
        Y, plan = self._checked_call(X, operands, out, rows_out)
        if key is not None and plan is not None:
            if len(self._calls) >= MAX_PLANS:
                self._calls.clear()
            self._calls[key] = plan
        return Y

    def _checked_call(self, X, operands, out, rows_out=False):
        """The call with every check; returns (Y, its CallPlan or None if N == 0)."""
        if rows_out and (self.conv is not None or out is not None):
            raise ValueError("rows_out=True is for matrix kernels called without out=")
        if self.conv is None:
            sig = signature_for(self.program, self.weight, X, operands, out)
            shape = (self.weight.M, X.shape[1])
            N = X.shape[1]
        else:
            sig, shape = conv_signature_for(self.program, self.weight, self.conv, X, operands, out)
            N = shape[0] * shape[2] * shape[3]
        if out is not None:
            Y = out
        elif rows_out:
            Y = torch.empty(shape[::-1], dtype=TORCH_DTYPES[sig.out_dtype], device=X.device).t()
        else:
            Y = torch.empty(shape, dtype=TORCH_DTYPES[sig.out_dtype], device=X.device)
        if N == 0:
            return Y, None
        spatial = tuple(X.shape[2:]) if self.conv is not None else None
        v = self.variant(sig, N, X.device, X.stride(), spatial)
        self._last = v
        if X.is_cuda:
            create_blas_handle(X.device)
        read = self._kernel_input(X, v.plan)
        run(v, read, Y, operands, sig)
        return Y, (CallPlan(v, sig, X, Y, operands, read) if out is None else None)

    def _kernel_input(self, X: torch.Tensor, plan: Plan) -> torch.Tensor:
        """The X the kernels read: a zero-padded copy (``pad_input``), a contiguous one
        (``tap_masks``), else X itself."""
        if plan.pad_input:
            return self._padded(X, plan.pdl)
        return self._contiguous(X) if plan.tap_masks else X

    @staticmethod
    def _contiguous(X: torch.Tensor) -> torch.Tensor:
        """X as contiguous NCHW (``tap_masks``: the table's offsets assume it; a copy only
        for another layout), within 32-bit element offsets."""
        if X.numel() > INT32_MAX:
            raise ValueError(f"X of shape {tuple(X.shape)} has more than 2**31 elements; "
                             "split the batch into smaller calls")
        return X.contiguous()

    def reference(self, X: torch.Tensor, *operands) -> torch.Tensor:
        """The same computation in float64 with torch (the masked dense weight)."""
        return evaluate(self.program, self.weight.to_dense(), X, *operands, conv=self.conv)

    # -------------------------------------------------------------- introspection
    @property
    def source(self) -> str:
        """The generated Triton source of the last variant run, or of the default variant
        (N = 128, X in the weight's dtype, operands as per-row vectors) if none has run."""
        if self._last is None:
            kinds = tuple((n, "row") for n in self.program.operands)
            d = self.weight.dtype
            from .compiler.canonicalise import output_dtype
            sig = Signature(d, d, output_dtype(self.program, d), kinds)
            return self.variant(sig, 128, torch.device("cpu")).source
        return self._last.source

    @property
    def last_plan(self) -> Optional[Plan]:
        return None if self._last is None else self._last.plan

    def with_values(self, values) -> "SpecializedKernel":
        """The same kernel for new nonzero values (same mask; CSR order). In ``indices``,
        ``table`` and ``blocks`` modes the compiled code is reused; ``values`` mode recompiles.
        A torch tensor's dtype becomes the weight's; numpy values keep the current one."""
        return SpecializedKernel(self.program, self.schedule, self.weight.with_values(values),
                                 self.conv)

    def __repr__(self):
        w = self.weight
        return (f"<SpecializedKernel {self.program.name}: {w.M}x{w.K}, nnz={w.nnz} "
                f"({100 * (1 - w.density):.1f}% sparse), {self.schedule!r}>")

    def summary(self) -> str:
        """A few lines for a reader: the program, the weight, the main plan fields and the
        size of the generated source, of the last call (else of the default N = 128 one)."""
        w, src = self.weight, self.source
        p = self.last_plan or self.plan(128)
        kernels = src.count("\ndef sparse_")
        return "\n".join([
            f"program  {self.program.name.rsplit('.', 1)[-1]}: {ir.to_source(self.program.out)}",
            f"weight   {w.M} x {w.K}, nnz {w.nnz} ({100 * (1 - w.density):.1f}% sparse), {w.dtype}",
            f"plan     mode={p.mode!r}: {p.rows_per_program} row(s) x {p.block_n} columns per "
            f"program, {p.num_warps} warp(s), rows in {p.row_order!r} order (every field: k.plan(N))",
            f"source   {len(src.splitlines())} lines, {kernels} kernel(s) (k.source)"])


class SparseKernel:
    """What ``@sparse_kernel`` returns: a traced program waiting for a weight."""

    def __init__(self, fn, schedule: Optional[Schedule] = None):
        self.fn = fn
        self.schedule = as_schedule(schedule)
        self.program = canonicalise_program(trace(fn))
        functools.update_wrapper(self, fn)

    def specialize(self, weight, schedule: Optional[Schedule] = None, kernel_size=None,
                   order: str = "chw") -> SpecializedKernel:
        """Specialise to a weight: a dense tensor with zeros, torch sparse CSR/COO, a scipy
        sparse matrix, or ``(mask, values)``; ``schedule`` (default: the decorator's) a
        Schedule, a mode name or a dict of Schedule fields. For ``conv2d`` programs the weight is 4-D
        (C_out, C_in, kh, kw), or a 2-D matrix with ``kernel_size=(C_in, kh, kw)`` and its
        column ``order`` ("chw": PyTorch's flattening; "hwc": DLMC's)."""
        node = ir.product(self.program.out)
        conv = None
        if isinstance(node, ir.Conv2d):
            w, (C_in, kh, kw) = conv_weight(weight, kernel_size, order)
            conv = geometry(node, C_in, kh, kw)
        elif kernel_size is not None:
            raise ValueError("kernel_size applies to conv2d programs only")
        else:
            w = as_sparse_weight(weight)
        if w.M == 0 or w.K == 0:
            raise ValueError(f"weight must have at least one row and column, got {w.M}x{w.K}")
        return SpecializedKernel(self.program, self.schedule if schedule is None
                                 else as_schedule(schedule), w, conv)

    specialise = specialize

    def __call__(self, weight, X, *operands, **kw):
        return self.specialize(weight)(X, *operands, **kw)

    def __repr__(self):
        return f"<sparse_kernel {self.program.name}: {ir.to_source(self.program.out)}, {self.schedule!r}>"


def sparse_kernel(fn=None, *, schedule: Optional[Schedule] = None):
    """Decorator: ``@sparse_kernel`` or ``@sparse_kernel(schedule=Schedule(...))`` (or a mode
    name, ``schedule="values"``, or a dict of Schedule fields)."""
    if fn is None:
        return lambda f: SparseKernel(f, schedule)
    return SparseKernel(fn, schedule)

