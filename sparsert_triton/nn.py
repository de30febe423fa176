"""``nn.Module`` layers over specialised sparse kernels (``sparsify(model)``, which puts them in a
model, is in :mod:`sparsert_triton.convert` and served here too).

``SparseLinear`` computes ``y = x W^T + b`` for a pruned ``W`` (out x in, frozen mask) as
``Y^T = W @ X^T`` with the custom op ``sparsert::spmm``:

* ``x`` of shape (..., in) is flattened to ``X`` (N, in) (a view for contiguous inputs). The
  kernel's column tiles run along N, so it wants ``X^T`` with unit stride along N: a row-major
  input (features contiguous, e.g. after a LayerNorm) reaches the one-row table kernel (the
  fp32 default) as it is, and that kernel transposes it in its own launch
  (``Plan.transpose_x``); the ``tl.dot`` kernels (the half-precision defaults) load it in
  place, coalesced along K. For the other kernels it is by default transposed once into a
  contiguous (in, N) copy, since reading it in place makes every load a gather;
  ``layer.row_major_input = "strided"`` has the kernel read it in place instead.
  The kernel writes the output row-major (..., out), as ``nn.Linear`` returns it (the default
  ``output_layout="rows"``: LayerNorm, attention and ``.view`` see what they see after
  ``nn.Linear``); ``output_layout="columns"`` has it write ``Y^T`` (out, N) contiguous and
  return its transposed view (strides (..., 1, N)), which a following ``SparseLinear`` reads
  in place with no copy, for chains of sparse layers (see :attr:`SparseLinear.output_layout`).
* Layers reading the same row-major input (a transformer's query, key and value
  projections) share one transposing copy of it, where one is made.
* Copies: that transpose of a row-major input; ``reshape`` of an input whose leading dims
  cannot be merged into one stride; with ``output_layout="columns"``, downstream ops that
  need a contiguous last dim copy the transposed output.
* Eager calls: the custom op (and its dispatcher cost) only where something may look at the
  call (``torch.compile`` / ``torch.export`` tracing, ``torch.jit.trace``, dispatch modes,
  functorch transforms, tensor subclasses); otherwise the op's autograd formula as an
  ``autograd.Function`` when a gradient is needed, else the kernel alone
  (:func:`sparsert_triton.ops.route`). A call of a layout seen before (the input's shape,
  strides, dtype and device) skips the checks and lookups it passed then
  (:mod:`sparsert_triton.runtime.callplan`).

``SparseConv2d`` is ``nn.Conv2d`` (groups=1, zero padding) over the direct sparse convolution
``sparsert::sparse_conv2d``: input (B, C_in, H, W) in any strides (channels_last inputs are
made NCHW once, as the kernel's column tiles run along W),
output contiguous NCHW, the bias fused into the kernel. Its backward pass uses dense PyTorch
convolutions on the masked weight (the forward pass is the sparse kernel).

The nonzeros are one Parameter ``values`` (1-D, CSR order of the (out, in) matrix; for a
convolution of the flattened (C_out, C_in*kh*kw) weight), the mask two int64 buffers
``indptr`` (out + 1) and ``indices`` (nnz), so ``state_dict`` holds exactly the sparse weight
and loads into any layer of the same shape (its mask is replaced). The schedule
travels as extra state. Kernels are specialised lazily, per device and dtype, at the first
call (see :mod:`sparsert_triton.ops`); ``.to()``, ``.half()``, ``.bfloat16()`` just convert
the parameters and the next call specialises for them.

Kernels run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``; anything else
raises (there is no dense fallback).
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Optional, Tuple

import numpy as np
import torch

from dsl.schedule import as_schedule
from torch import Tensor, nn

from dsl import Schedule

from . import ops
from .weights import check_csr


def _csr_of_mask(mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(indptr, indices) of a 2-D mask (nonzero = kept), row-major order."""
    mask = mask.detach().to("cpu") != 0
    rows, cols = mask.nonzero(as_tuple=True)
    indptr = torch.zeros(mask.shape[0] + 1, dtype=torch.int64, device="cpu")
    torch.cumsum(torch.bincount(rows, minlength=mask.shape[0]), 0, out=indptr[1:])
    return indptr, cols.to(torch.int64).clone()     # its own storage, not half of nonzero()'s


class _SparseLayer(nn.Module):
    """What :class:`SparseLinear` and :class:`SparseConv2d` share: a (rows x cols) matrix under
    a frozen mask, its nonzeros ``values`` (a 1-D Parameter, CSR order), the mask as ``indptr``
    / ``indices`` buffers, an optional ``bias`` (rows,), the schedule, and the registered
    pattern the custom ops run. Subclasses set ``_rows``/``_cols`` and ``_rebuild_pattern``."""

    _rows: int
    _cols: int

    def _init_sparse(self, mask2d: Tensor, bias: bool, schedule: Optional[Schedule], device,
                     dtype):
        indptr, indices = _csr_of_mask(mask2d)
        factory = dict(device=device, dtype=dtype)
        self.values = nn.Parameter(torch.empty(indices.shape[0], **factory))
        self.bias = nn.Parameter(torch.empty(self._rows, **factory)) if bias else None
        self.register_buffer("indptr", indptr.to(device))
        self.register_buffer("indices", indices.to(device))
        self._schedule = schedule or Schedule()
        self._rebuild_pattern()

    def _rebuild_pattern(self):
        raise NotImplementedError

    def _copy_dense(self, module: nn.Module, w: Tensor, mask: Tensor) -> "_SparseLayer":
        """Take the nonzeros of ``w`` at ``mask``, the bias and the training state of the dense
        ``module`` this layer replaces."""
        with torch.no_grad():
            self.values.copy_(w[mask])
            if module.bias is not None:
                self.bias.copy_(module.bias)
        self.values.requires_grad_(module.weight.requires_grad)
        self.train(module.training)
        return self

    def _reset_uniform(self, fan_in: int):
        """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for values and bias, as ``nn.Linear`` /
        ``nn.Conv2d`` initialise (kaiming_uniform with a = sqrt(5) gives that bound)."""
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(self.values, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    # ------------------------------------------------------------ properties
    @property
    def kernel_id(self) -> int:
        return self._pattern.kernel_id

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self._schedule = schedule
        self._rebuild_pattern()

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / max(1, self._rows * self._cols)

    def refresh(self):
        """Re-read the values at the next call (after writing them through ``.data``)."""
        self._pattern.refresh()

    def _flat_mask(self) -> Tensor:
        m = torch.zeros(self._rows * self._cols, dtype=torch.bool, device=self.values.device)
        m[self._pattern.flat_index(self.values.device)] = True
        return m

    def _flat_dense_weight(self) -> Tensor:
        flat = self.values.new_zeros(self._rows * self._cols)
        return flat.index_put((self._pattern.flat_index(self.values.device),), self.values)

    def _check_dtype(self, x: Tensor, values: Tensor):
        if x.dtype != values.dtype:
            raise TypeError(f"{type(self).__name__} holds {values.dtype} values but the "
                            f"input is {x.dtype}; convert one of them (e.g. layer.half())")

    def _mask_args(self):
        """The custom ops' mask arguments: the CSR buffers and the pattern's key, so a traced
        or exported graph carries the mask it needs (``torch.export`` lifts the buffers)."""
        return self.indptr, self.indices, self._pattern.key

    def _run(self, op, function, direct, x: Tensor, X: Tensor, values: Tensor,
             bias: Optional[Tensor], how: Optional[str] = None, *extra) -> Tensor:
        """The layer's op on ``X``: through the dispatcher (``op``, the custom op) when
        tracing, compiling or under a dispatch mode; else through ``function`` (the op's
        autograd formula as an ``autograd.Function``) when a gradient is needed, or the kernel
        alone (``direct``). See :func:`sparsert_triton.ops.route` (``how``: its answer, if the
        caller has it). ``extra``: arguments of ``direct`` and ``function`` the op lacks."""
        if how is None:
            how = ops.route(x, values, bias)
        if how is ops.DIRECT:
            return direct(X, values, bias, self._pattern.kernel_id, *extra)
        if how is ops.AUTOGRAD:
            return function.apply(X, values, bias, *self._mask_args(), *extra)
        return op(X, values, bias, *self._mask_args())

    # ------------------------------------------------------------ state
    def get_extra_state(self):
        return {"schedule": dataclasses.asdict(self._schedule)}

    def set_extra_state(self, state):
        self._schedule = as_schedule(state["schedule"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load a sparse weight, possibly under another mask (the layer is resized to it).
        Everything the layer would take from ``state_dict`` is checked before anything is
        copied, so a load that fails leaves the layer exactly as it was."""
        problem = self._state_problem(state_dict, prefix)
        if problem is not None:
            error_msgs.append(problem)
            return
        indices = state_dict.get(prefix + "indices")
        if indices is not None and indices.shape != self.indices.shape:  # another mask: resize
            self._buffers["indices"] = self.indices.new_empty(indices.shape)
            self.values = nn.Parameter(self.values.new_empty(indices.shape),
                                       requires_grad=self.values.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._rebuild_pattern()

    def _state_problem(self, state_dict, prefix) -> Optional[str]:
        """Why this layer cannot load ``state_dict`` (a message), or None. The mask must be
        canonical CSR (:func:`check_csr`: the stored ``values`` are the nonzeros in that
        order), ``values`` must have one entry per nonzero, ``bias`` one per row, and a new
        mask must come with its values. (Missing and unexpected keys are ``nn.Module``'s
        business: a strict load reports them after loading the keys that are present, as for
        any module; the layer's pattern then still matches its buffers.)"""
        own = ["values", "bias", "indptr", "indices", "_extra_state"]
        got = {n: state_dict[prefix + n] for n in own if prefix + n in state_dict}
        for n, t in got.items():
            if n != "_extra_state" and not isinstance(t, Tensor):
                return f"{prefix}{n}: expected a tensor, got {type(t).__name__}"
        indptr, indices = got.get("indptr"), got.get("indices")
        nnz, new_mask = self.nnz, False
        if (indptr is None) != (indices is None):
            return (f"{prefix}indptr and {prefix}indices: a mask needs both, the state_dict "
                    f"has only {prefix}{'indptr' if indices is None else 'indices'}")
        if indptr is not None:
            for n, t in (("indptr", indptr), ("indices", indices)):
                if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                    return f"{prefix}{n}: must hold integer indices, got {t.dtype}"
            try:
                p, i = check_csr(self._rows, self._cols, indptr.detach().cpu().numpy(),
                                 indices.detach().cpu().numpy(),
                                 (prefix + "indptr", prefix + "indices"))
            except ValueError as e:
                return f"{e} (a ({self._rows}, {self._cols}) mask)"
            nnz = int(i.shape[0])
            new_mask = nnz != self.nnz or not (
                np.array_equal(p, self.indptr.cpu().numpy())
                and np.array_equal(i, self.indices.cpu().numpy()))
        if new_mask and "values" not in got:
            return (f"{prefix}values: missing, and {prefix}indptr/{prefix}indices describe "
                    "another mask than the layer's: a new mask needs its values")
        expected = {"values": (nnz,), "bias": (self._rows,) if self.bias is not None else None}
        for n, shape in expected.items():
            if shape is not None and n in got and tuple(got[n].shape) != shape:
                return f"{prefix}{n}: shape {tuple(got[n].shape)}, expected {shape}"
        if "_extra_state" in got:
            try:
                as_schedule(got["_extra_state"]["schedule"])
            except Exception as e:
                return f"{prefix}_extra_state: not a schedule ({type(e).__name__}: {e})"
        return None


class _SharedColumns:
    """The contiguous ``X^T`` (in, N) made for the last row-major input, kept while that input
    lives, so that the layers reading one tensor (a transformer block's query, key and value
    projections all read the LayerNorm's output) share one transposing copy instead of
    making one each.

    The copy is reused only for the same tensor object at the same storage address, shape,
    strides and version counter (an in-place write to the input bumps it) and the same grad
    mode (a copy made without autograd history is not handed to a call that records one);
    never for inference tensors, which have no version counter. At most one copy is held
    (the last one made; dropped when its input is freed). Eager calls only: traced,
    compiled and dispatch-mode calls copy every time (see :func:`sparsert_triton.ops.route`).
    Writes through ``.data`` bypass the version counter, as for the values (see
    :func:`sparsert_triton.ops.refresh`).
    """

    def __init__(self):
        # (weakref to the input, version, address, strides, grad, copy, the input's shape)
        self.entry = None
        self.copies = self.reuses = 0

    def of(self, x: Tensor, Xt: Optional[Tensor] = None) -> Tensor:
        """``Xt.contiguous()`` for ``Xt``, a transposed view of the input ``x`` (..., in): the
        (in, N) view of its rows, made here only where no copy can be reused."""
        kept = not x.is_inference()
        if kept:
            version, grad = x._version, torch.is_grad_enabled()
            e = self.entry      # one read: a tuple another thread cannot change under us
            if (e is not None and e[0]() is x and e[1] == version and e[2] == x.data_ptr()
                    and e[3] == x.stride() and e[4] == grad and e[6] == x.shape
                    and e[5].dtype == x.dtype and e[5].device == x.device):
                self.reuses += 1
                return e[5]
        copy_ = (Xt if Xt is not None else _columns_view(x)).contiguous()
        self.copies += 1
        if kept:
            self.entry = (weakref.ref(x, self._forget), version, x.data_ptr(), x.stride(),
                          grad, copy_, x.shape)
        return copy_

    def _forget(self, ref):
        e = self.entry
        if e is not None and e[0] is ref:
            self.entry = None

    def clear(self):
        self.entry = None


def _columns_view(x: Tensor) -> Tensor:
    """The (in, N) transposed view of the rows of ``x`` (..., in)."""
    return (x if x.dim() == 2 else x.reshape(-1, x.shape[-1])).t()


#: the transposing copy shared by consecutive layers that read one input
_columns = _SharedColumns()


class SparseLinear(_SparseLayer):
    """``y = x W^T + b`` with ``W`` (out x in) sparse under a frozen mask.

    ``mask``: (out, in), nonzero = kept; ``None`` keeps every position (a placeholder to
    ``load_state_dict`` a sparse layer into). Values and bias are initialised as in
    ``nn.Linear``; use :meth:`from_linear` to convert a pruned layer.
    """

    #: see :attr:`row_major_input`
    ROW_MAJOR_INPUTS = ("transpose", "strided")
    _transpose_input = True
    #: see :attr:`output_layout`
    OUTPUT_LAYOUTS = ("rows", "columns")
    #: the default :attr:`output_layout`
    DEFAULT_OUTPUT_LAYOUT = "rows"
    _rows_out = True

    def __init__(self, in_features: int, out_features: int, mask: Optional[Tensor] = None,
                 bias: bool = True, schedule: Optional[Schedule] = None, device=None,
                 dtype=None, output_layout: str = DEFAULT_OUTPUT_LAYOUT):
        super().__init__()
        self.output_layout = output_layout
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._rows, self._cols = self.out_features, self.in_features
        if mask is None:
            mask = torch.ones(out_features, in_features, dtype=torch.bool)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), "
                             f"got {tuple(mask.shape)}")
        self._init_sparse(mask, bias, schedule, device, dtype)
        self.reset_parameters()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Optional[Tensor] = None,
                    schedule: Optional[Schedule] = None,
                    output_layout: str = DEFAULT_OUTPUT_LAYOUT) -> "SparseLinear":
        """From an ``nn.Linear`` and a mask, or, with ``mask=None``, the weight's nonzeros."""
        w = linear.weight.detach()
        mask = (w != 0) if mask is None else (mask.to(w.device) != 0)
        layer = cls(linear.in_features, linear.out_features, mask, linear.bias is not None,
                    schedule, device=w.device, dtype=w.dtype, output_layout=output_layout)
        return layer._copy_dense(linear, w, mask)

    def reset_parameters(self):
        self._reset_uniform(self.in_features)

    @property
    def row_major_input(self) -> str:
        """How an input whose features are contiguous (``x.stride(-1) == 1``, e.g. a
        LayerNorm's output) reaches the kernel, which reads ``X^T`` (in, N) in column tiles
        along N: ``"transpose"`` (default) copies it once into a contiguous (in, N) tensor, so
        the kernel's loads are unit-stride (one extra copy kernel per call); ``"strided"``
        lets the kernel read it in place, each column tile a gather with stride ``in`` (no
        copy, slower loads). Which is faster depends on the GPU and N:
        ``bench/eager_bench.py`` measures both. Inputs laid out as (in, N) columns (the output
        of a sparse layer) and single rows are read in place either way, and so is every
        input of an eager call whose kernel loads X as ``tl.dot`` tiles (the bitmap mode with
        ``use_dot``, the expand mode: coalesced along K as along N) or is the one-row table
        kernel (the fp32 default), which transposes a row-major X itself in the same launch
        (see :meth:`sparsert_triton.ops.SparsePattern.takes_row_major_x`)."""
        return "transpose" if self._transpose_input else "strided"

    @row_major_input.setter
    def row_major_input(self, how: str):
        if how not in self.ROW_MAJOR_INPUTS:
            raise ValueError(f"row_major_input must be one of {self.ROW_MAJOR_INPUTS}, "
                             f"got {how!r}")
        self._transpose_input = how == "transpose"

    @property
    def output_layout(self) -> str:
        """How the output ``y`` (..., out) is laid out in eager calls.

        ``"rows"`` (default): ``y`` is row-major like ``nn.Linear``'s, written by the kernel
        itself (no copy; its stores step by ``out`` along N), so what reads ``y`` runs as it
        does after ``nn.Linear``. ``"columns"``: the kernel writes ``Y^T`` (out, N)
        contiguous and ``y`` is its transposed view (strides (..., 1, N)): the next
        ``SparseLinear`` reads it with no transposing copy (chains of sparse layers with
        elementwise ops between them), but ops that want a contiguous last dim copy it
        (LayerNorm, ``.contiguous()``) or take a slower path (the fused
        ``scaled_dot_product_attention`` kernels need a unit last-dim stride, so a transposed
        query / key / value falls back to the unfused math path).

        Why "rows" is the default (H100, bert-base at 90%, 72 sparse Linears, 128 tokens,
        ``bench/eager_bench.py``): the eager model took 6.5 ms fp16 / 5.9 ms fp32 with
        "rows" against 9.5 / 8.1 ms with "columns" (dense 4.2 / 4.1 ms), and 6.4 against
        9.6 ms fp16 at 1024 tokens: per encoder layer "columns" adds 11 (fp32) to 16 (fp16)
        kernel-launching ops (copies of the outputs, the attention's math path), each a
        launch on the host's critical path. The kernels' own GPU time is higher with "rows"
        (a 768x3072 layer at N=1024 fp16: 83 against 49 us; the whole model in a CUDA
        graph: 1.68 against 1.59 ms at 128 tokens, 4.7 against 3.8 ms at 1024), so a
        graph-captured model at large N can gain from "columns". Calls through the custom
        op (``torch.compile``, dispatch modes) return the op's "columns" layout either way.
        """
        return "rows" if self._rows_out else "columns"

    @output_layout.setter
    def output_layout(self, how: str):
        if how not in self.OUTPUT_LAYOUTS:
            raise ValueError(f"output_layout must be one of {self.OUTPUT_LAYOUTS}, got {how!r}")
        self._rows_out = how == "rows"

    def _rebuild_pattern(self):
        self._pattern = ops.SparsePattern(self.out_features, self.in_features,
                                          self.indptr.cpu().numpy(), self.indices.cpu().numpy(),
                                          self._schedule)

    def mask(self) -> Tensor:
        """The (out, in) boolean mask."""
        return self._flat_mask().view(self.out_features, self.in_features)

    def dense_weight(self) -> Tensor:
        """The masked dense weight (out, in); differentiable with respect to ``values``."""
        return self._flat_dense_weight().view(self.out_features, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the masked dense weight (the dense reference)."""
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    # ------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        # the parameters straight from their dict (not through Module.__getattr__); a value
        # assigned outside it (a plain tensor set as ``bias`` where there was none) is read
        # as an attribute
        params, shape = self._parameters, x.shape
        values = params["values"] if "values" in params else self.values
        bias = params["bias"] if "bias" in params else self.bias
        key = None
        if self._rows_out:
            # an input layout seen before, same values and bias, nothing tracing or recording
            # autograd: the output allocated as nn.Linear's and the kernels launched on the
            # addresses (no views, no lookups; ops.SparsePattern.record_rows_call)
            key = (shape, x.stride(), x.dtype, x.device, self._transpose_input)
            e = self._pattern.rows_calls.get(key)
            if e is not None and e[0] is values and e[1] is bias and e[2] == (
                    values.data_ptr(), -1 if values.is_inference() else values._version,
                    values.shape, values.dtype) and ops.route(x, values, bias) is ops.DIRECT:
                plan = e[3]
                # the kernel's (in, N) copy, made or reused (not where nothing would launch)
                xc = x if not e[5] else _columns.of(x) if plan.variant.launcher.enabled \
                    else None
                if xc is not None:
                    y = torch.empty(e[6], dtype=plan.dtype, device=plan.device)
                    if plan.launch(xc, xc.data_ptr(), y.data_ptr(), e[4]):
                        self._pattern.planned_calls += 1
                        return y
        if len(shape) < 1 or shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expects input (..., {self.in_features}), "
                             f"got shape {tuple(shape)}")
        if x.dtype != values.dtype:
            self._check_dtype(x, values)
        flat = len(shape) == 2
        X = x if flat else x.reshape(-1, self.in_features)   # (N, in): a view when x allows it
        Xt = X.t()                                            # (in, N)
        how = ops.route(x, values, bias)
        copied = False
        if self._transpose_input and Xt.stride(1) != 1 and Xt.shape[1] > 1:
            # the kernel's column tiles run along N: a row-major input (features contiguous)
            # would make every load a gather, so it is transposed once here (unless
            # row_major_input="strided", or, in eager calls, the kernel loads X as tl.dot
            # tiles, coalesced either way, or transposes X itself in its launch), once for
            # all the layers that read the same input (a transformer's query, key and value
            # projections); the output of a sparse layer is already laid out so that the
            # next sparse layer needs no copy
            if how is ops.DISPATCH:       # traced or watched: no planning inside the trace
                Xt, copied = Xt.contiguous(), True
            elif not self._pattern.takes_row_major_x(Xt.shape[1], x.dtype):
                Xt, copied = _columns.of(x, Xt), True
        if how is ops.DIRECT:
            # the layer's own pattern (what ops.spmm_direct finds under its kernel_id)
            Yt = self._pattern.spmm(Xt, values, bias, self._rows_out)
            if key is not None:
                self._pattern.record_rows_call(key, x, Xt, values, bias, copied)
        else:
            Yt = self._run(ops.spmm, ops.SpmmFunction, ops.spmm_direct, x, Xt, values, bias,
                           how, *((True,) if self._rows_out else ()))
        Y = Yt.t()         # (N, out): a view of the Y^T stored, row-major for output_layout 'rows'
        return Y if flat else Y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        layout = "" if self.output_layout == self.DEFAULT_OUTPUT_LAYOUT else \
            f", output_layout={self.output_layout!r}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, sparsity={self.sparsity:.3f}, "
                f"schedule={self._schedule!r}{layout}")


def conv_padding(padding, kernel_size, dilation) -> Tuple[int, int]:
    """``nn.Conv2d``'s padding as a symmetric pair: ints and pairs as given, ``'valid'`` as 0,
    ``'same'`` as ``dilation * (k - 1) / 2`` per side. ``'same'`` with an even effective
    kernel pads asymmetrically in PyTorch, which the sparse kernel does not: ValueError."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError(f"padding='same' with kernel {tuple(kernel_size)} and dilation "
                             f"{tuple(dilation)} pads asymmetrically; SparseConv2d needs "
                             "symmetric padding")
        return (total[0] // 2, total[1] // 2)
    return ops._pair(padding, "padding")


class SparseConv2d(_SparseLayer):
    """``nn.Conv2d`` (groups=1, zero padding) with its weight (C_out, C_in, kh, kw) sparse under
    a frozen mask; the forward pass is the direct sparse convolution kernel.

    ``values`` are the nonzeros in CSR order of the flattened (C_out, C_in*kh*kw) weight
    (PyTorch's ``weight.reshape(C_out, -1)``); ``mask`` is (C_out, C_in, kh, kw) or that
    flattened shape, nonzero = kept, ``None`` for a dense placeholder. The bias is fused into
    the kernel's epilogue as a per-channel operand. Inputs (B, C_in, H, W) or (C_in, H, W), in
    any strides (NCHW or channels_last); the output is contiguous NCHW.

    Autograd: ``dx`` (a transposed convolution) and ``dvalues`` (the weight gradient at the
    mask) are computed with dense PyTorch convolutions on the masked dense weight
    (``torch.nn.grad.conv2d_input`` / ``conv2d_weight``); only the forward pass is sparse.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 mask: Optional[Tensor] = None, schedule: Optional[Schedule] = None,
                 device=None, dtype=None):
        super().__init__()
        if groups != 1:
            raise ValueError(f"SparseConv2d supports groups=1 only, got groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(f"SparseConv2d supports padding_mode='zeros' only, got "
                             f"{padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = ops._pair(kernel_size, "kernel_size")
        self.stride = ops._pair(stride, "stride")
        self.dilation = ops._pair(dilation, "dilation")
        self.padding = conv_padding(padding, self.kernel_size, self.dilation)
        self.groups, self.padding_mode = 1, "zeros"
        kh, kw = self.kernel_size
        self._rows, self._cols = self.out_channels, self.in_channels * kh * kw
        shape4 = (self.out_channels, self.in_channels, kh, kw)
        if mask is None:
            mask = torch.ones(shape4, dtype=torch.bool)
        if tuple(mask.shape) not in (shape4, (self._rows, self._cols)):
            raise ValueError(f"mask must have shape {shape4} or ({self._rows}, {self._cols}), "
                             f"got {tuple(mask.shape)}")
        self._init_sparse(mask.reshape(self._rows, self._cols), bias, schedule, device, dtype)
        self.reset_parameters()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, mask: Optional[Tensor] = None,
                    schedule: Optional[Schedule] = None) -> "SparseConv2d":
        """From an ``nn.Conv2d`` and a mask, or, with ``mask=None``, the weight's nonzeros."""
        w = conv.weight.detach()
        mask = (w != 0) if mask is None else (mask.to(w.device) != 0)
        if mask.dim() == 2:
            mask = mask.reshape(w.shape)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, mask, schedule, device=w.device, dtype=w.dtype)
        return layer._copy_dense(conv, w, mask)

    def reset_parameters(self):
        self._reset_uniform(self._cols)

    def _rebuild_pattern(self):
        kh, kw = self.kernel_size
        self._pattern = ops.ConvPattern(self.out_channels, self.in_channels, kh, kw, self.stride,
                                        self.padding, self.dilation, self.indptr.cpu().numpy(),
                                        self.indices.cpu().numpy(), self._schedule)

    @property
    def weight_shape(self) -> Tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def mask(self) -> Tensor:
        """The (C_out, C_in, kh, kw) boolean mask."""
        return self._flat_mask().view(self.weight_shape)

    def dense_weight(self) -> Tensor:
        """The masked dense weight (C_out, C_in, kh, kw); differentiable w.r.t. ``values``."""
        return self._flat_dense_weight().view(self.weight_shape)

    def to_conv2d(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` holding the masked dense weight (the dense reference)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, bias=self.bias is not None,
                         device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    # ------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"SparseConv2d expects input (B, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W), got shape {tuple(x.shape)}")
        values, bias = self.values, self.bias
        self._check_dtype(x, values)
        X = x if x.dim() == 4 else x.unsqueeze(0)
        if X.stride(3) != 1 and X.shape[3] > 1:
            # the kernel's column tiles run along W: channels-last input is made NCHW once
            X = X.contiguous()
        Y = self._run(ops.sparse_conv2d, ops.Conv2dFunction, ops.sparse_conv2d_direct, x, X,
                      values, bias)
        return Y if x.dim() == 4 else Y.squeeze(0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, sparsity={self.sparsity:.3f}, "
                f"schedule={self._schedule!r}")


#: names served by :mod:`sparsert_triton.convert` (``sparsify`` and its report), which imports
#: this module: looked up there when first asked for
_CONVERT = ("DEFAULT_CONV_N", "LayerRow", "LayoutArg", "ScheduleArg", "SparsifyReport",
            "sparsify")


def __getattr__(name):
    if name in _CONVERT:
        from . import convert
        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
