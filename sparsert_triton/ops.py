"""PyTorch custom ops over specialised sparse kernels, visible to ``torch.compile`` and autograd.

A fixed mask is a :class:`SparsePattern`, registered in this process under an integer
``kernel_id`` (for direct calls) and under a ``key``: a string that names the pattern and
carries what rebuilds it (shape, schedule, convolution geometry, a digest of the mask). The
ops take tensors, the mask's CSR buffers ``indptr``/``indices`` and that key, so a traced or
exported graph holds its mask as tensors and the key as a constant string: a program saved
with ``torch.export.save`` runs in another process (one that imports this module), which
rebuilds the pattern from the buffers on first use, after checking them against the digest::

    sparsert::spmm(X, values, bias?, mask)        Y  = W @ X (+ bias[:, None])      (M, N)
    sparsert::spmm_t(G, values, mask)             GX = W^T @ G                       (K, N)
    sparsert::spmm_grad_values(G, X, mask)        GV = (G @ X^T)[mask]  (CSR order)  (nnz,)

where ``mask`` stands for the three arguments ``indptr, indices, key`` (``pattern.op_args()``).
Convolutions (a :class:`ConvPattern`: the flattened (C_out, C_in*kh*kw) mask plus stride,
padding and dilation)::

    sparsert::sparse_conv2d(X, values, bias?, mask)             Y  = conv2d(X, W) (+ bias)
    sparsert::sparse_conv2d_grad_input(G, values, H, W, mask)   GX = conv2d_transpose(G, W)
    sparsert::sparse_conv2d_grad_values(G, X, mask)             GV = dL/dW at the mask

Only the forward convolution is a sparse kernel; its two gradients are dense PyTorch
convolutions on the masked dense weight.

``W`` is the (M x K) matrix whose nonzeros are ``values`` (1-D, CSR order of the pattern) at the
pattern's positions. ``X`` is (K, N) with any strides (a transposed view costs no copy).

Autograd of ``spmm`` with ``Y = W X + b 1^T``:  dX = W^T dY (a kernel specialised to the
transposed mask, built lazily), dvalues = (dY X^T) at the mask positions only (the mask is
frozen), db = dY 1 (the sum over N). Every op has a fake implementation, so
``torch.compile(fullgraph=True)`` traces through it.

Kernels are specialised lazily per (device, dtype) and re-specialised when ``values`` changes:
the change is seen through the tensor's identity (storage address) and its version counter,
which in-place updates of a Parameter (optimizer steps, ``load_state_dict``) bump. Writes
through ``tensor.data`` bypass the version counter: call :func:`refresh` after those. With
``mode="values"`` new values mean a recompile; ``"indices"`` and ``"table"`` reuse the compiled
code and only re-upload the values.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import threading
import uuid
import weakref
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch

from dsl.schedule import as_schedule
from torch import Tensor

from dsl import Schedule

from .api import SpecializedKernel, sparse_kernel
from .compiler.compile import interpreting
from .compiler.conv import ConvGeometry
from .runtime.callplan import MAX_PLANS, call_key
from .weights import SparseWeight, as_sparse_weight, check_csr, csr_digest

_STRIDED = torch.strided


@sparse_kernel
def sparse_matmul(W, X):
    """Y = W @ X."""
    return W @ X


@sparse_kernel
def sparse_matmul_bias(W, X, bias):
    """Y = W @ X + bias (one value per output row)."""
    return W @ X + bias


_ids = itertools.count(1)
_PATTERNS: "weakref.WeakValueDictionary[int, SparsePattern]" = weakref.WeakValueDictionary()
_BY_KEY: "weakref.WeakValueDictionary[str, SparsePattern]" = weakref.WeakValueDictionary()
_ADOPTED = {}                  # key -> pattern rebuilt by an op from its inputs (no layer owns it)
_adopt_lock = threading.Lock()


def csr_transpose(M: int, K: int, indptr: np.ndarray, indices: np.ndarray):
    """CSR of ``W^T`` from CSR of ``W``: ``(indptr_t, indices_t, perm)`` with
    ``values_t = values[perm]`` (column-major order of ``W``: by column, then by row)."""
    rows = np.repeat(np.arange(M, dtype=np.int64), np.diff(indptr))
    perm = np.lexsort((rows, indices))
    indptr_t = np.zeros(K + 1, np.int64)
    np.cumsum(np.bincount(indices, minlength=K), out=indptr_t[1:])
    return indptr_t, rows[perm], perm


class SparsePattern:
    """A frozen mask (M x K, CSR) registered under ``kernel_id`` for the custom ops.

    Holds the kernels specialised to it: ``W @ X (+ bias)`` per (device, dtype, bias?) and, for
    the input gradient, ``W^T @ G`` on the transposed mask, each rebuilt when the values change.
    A copy (``copy.deepcopy``, pickling) registers a new pattern with a new id and key.
    """

    def __init__(self, M: int, K: int, indptr, indices, schedule: Optional[Schedule] = None,
                 key: Optional[str] = None):
        # canonical CSR (sorted, distinct columns per row) or ValueError; own copies
        indptr, indices = check_csr(int(M), int(K), indptr, indices)
        # the base weight's values are replaced per call
        self.base = SparseWeight(int(M), int(K), indptr, indices,
                                 np.zeros(indices.shape[0]), "float32")
        self.M, self.K, self.indptr, self.indices = int(M), int(K), indptr, indices
        self.schedule = schedule or Schedule()
        self._kernels = {}     # key -> (values tensor, version, SpecializedKernel)
        self._planned = {}     # call layout -> (values, version, address, CallPlan, prepare)
        # a layer's row-major eager calls: input layout -> (values, bias, the values'
        # (address, version, shape, dtype), CallPlan, operands, whether the kernel reads a
        # transposing copy of the input); see :meth:`record_rows_call`
        self.rows_calls = {}
        self._index = {}       # device -> flat index rows * K + cols (torch.long)
        self._t = None         # (SparseWeight of W^T with zero values, perm)
        self._in_place = {}    # (N, X dtype) -> whether that call's kernel takes a row-major X
        # forward calls that ran a planned call / went through the checks (and planned one)
        self.planned_calls = self.checked_calls = 0
        self.kernel_id = next(_ids)
        _PATTERNS[self.kernel_id] = self
        self.key = key if key is not None else self._make_key()
        _BY_KEY[self.key] = self

    # ------------------------------------------------------------ the key (export)
    def _key_fields(self) -> dict:
        return {"M": self.M, "K": self.K, "nnz": self.nnz,
                "schedule": dataclasses.asdict(self.schedule)}

    def _make_key(self) -> str:
        """JSON of what rebuilds this pattern from its CSR buffers, the mask's digest and a
        unique id (two layers with one mask keep their own kernels)."""
        return json.dumps({**self._key_fields(), "mask": self.base.mask_digest(),
                           "id": uuid.uuid4().hex}, sort_keys=True)

    def op_args(self, device=None):
        """``(indptr, indices, key)``: the custom ops' mask arguments (int64 CSR tensors)."""
        return (torch.from_numpy(self.indptr).to(device), torch.from_numpy(self.indices).to(device),
                self.key)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def __reduce__(self):
        return (SparsePattern, (self.M, self.K, self.indptr, self.indices, self.schedule))

    def __repr__(self):
        return (f"<SparsePattern #{self.kernel_id}: {self.M}x{self.K}, nnz={self.nnz}, "
                f"{self.schedule!r}>")

    # ------------------------------------------------------------ kernels
    def takes_row_major_x(self, N: int, dtype: torch.dtype) -> bool:
        """Whether ``W @ X`` of N columns in ``dtype`` runs a kernel that takes a row-major X
        (features contiguous, the (K, N) view of an (N, K) input) as it is: one that loads X
        as ``tl.dot`` operand tiles (K positions x columns: the bitmap mode with ``use_dot``,
        the expand mode), as coalesced along K as along N, or the one-row table kernel up to
        ``transposed.MAX_N`` columns, which then transposes X itself in the same launch
        (``Plan.transpose_x``; beyond that an aten copy first costs less GPU time). The other
        kernels gather whole rows of X per nonzero and want them contiguous along N."""
        key = (int(N), dtype)
        hit = self._in_place.get(key)
        if hit is None:
            from .compiler.canonicalise import plan_for
            from .compiler.pipeline import transposes_x
            from .compiler.render import transposed
            from .weights import WEIGHT_DTYPES
            try:    # (an X dtype or schedule that does not serve this call: its own error)
                plan = plan_for(self.schedule, self.base, int(N), WEIGHT_DTYPES[dtype])
                hit = (plan.bitmap_tiles and plan.use_dot) or (
                    N <= transposed.MAX_N and transposes_x(plan, int(N), (1, self.K), self.K))
            except (KeyError, ValueError):
                hit = False
            self._in_place[key] = hit
        return hit

    def _cached(self, key, values: Tensor, build) -> SpecializedKernel:
        hit = self._kernels.get(key)
        version = _version(values)
        if hit is not None and hit[0].data_ptr() == values.data_ptr() \
                and hit[1] == version and hit[0].shape == values.shape:
            return hit[2]
        k = build(values.detach())
        # holding the tensor keeps its storage alive, so its address cannot be reused
        self._kernels[key] = (values, version, k)
        return k

    def forward_kernel(self, values: Tensor, with_bias: bool) -> SpecializedKernel:
        """The kernel for ``W @ X (+ bias)`` with these values."""
        program = sparse_matmul_bias if with_bias else sparse_matmul
        return self._cached(("fwd", values.device, values.dtype, with_bias), values,
                            lambda v: program.specialize(self.base.with_values(v), self.schedule))

    def _forward(self, X: Tensor, values: Tensor, bias: Optional[Tensor],
                 rows_out: bool = False, check=None) -> Tensor:
        """``W @ X (+ bias[:, None])``, checked, without the dispatcher (what the op runs;
        :meth:`spmm`); ``rows_out``: Y (M, N) is the transpose of a contiguous (N, M) tensor.

        The first call of a layout (X's, the values' and the bias' shape, strides, dtype and
        device, and the output's layout) is checked (``check``, default the matrix op's
        checks), finds its kernel and plans the call; later calls of that layout with the
        same values (the same tensor, at the same address, at the same version) run the
        planned call directly."""
        operands = (bias,) if bias is not None else ()
        key = _forward_key(X, values, bias, rows_out)
        hit = self._planned.get(key) if key is not None else None
        if hit is not None and hit[0] is values and hit[2] == values.data_ptr() \
                and hit[1] == (-1 if values.is_inference() else values._version):
            self.planned_calls += 1
            return hit[3](X, operands, hit[4])
        self.checked_calls += 1
        (check or _check_spmm)(X, values, bias, self)
        k = self.forward_kernel(values, bias is not None)
        if rows_out:
            Y = k(X, *operands, rows_out=True)
            plan = k._calls.get((*call_key(X, operands), "rows")) if key is not None else None
        else:
            Y = k(X, *operands)
            plan = k._calls.get(call_key(X, operands)) if key is not None else None
        if plan is not None:
            if len(self._planned) >= MAX_PLANS:
                self._planned.clear()
            # the plan and the kernel's input preparation, bound once
            self._planned[key] = (values, _version(values), values.data_ptr(), plan,
                                  k._kernel_input)
        return Y

    #: the matrix op's forward (one frame less on the eager path than a wrapper)
    spmm = _forward

    def record_rows_call(self, key, x: Tensor, Xt: Tensor, values: Tensor,
                         bias: Optional[Tensor], copied: bool = False):
        """After a planned direct call ``W @ Xt`` into the rows layout (Y (M, N) the transpose
        of a contiguous (N, M) tensor), where ``Xt`` views the memory of the layer's input
        ``x`` (..., K) from its first element: remember it under ``key`` (the input's layout
        and whatever else the caller's choice of view depended on). A later call with an
        input of that layout, the same values (tensor, address, version) and the same bias
        tensor needs neither view: it allocates the (..., M) output and launches on the
        addresses (see ``SparseLinear.forward``). The output layout is what the plan was
        made for, so the memory matches element for element. ``copied``: ``Xt`` is instead
        the contiguous (K, N) copy of ``x`` that the layer made (``nn._SharedColumns``); a
        later call makes or reuses that copy and launches on its address."""
        if Xt.shape[1] < 1 or (not copied and Xt.data_ptr() != x.data_ptr()):
            return
        hit = self._planned.get(_forward_key(Xt, values, bias, True))
        if hit is None or hit[0] is not values or not hit[3].direct:
            return
        if len(self.rows_calls) >= MAX_PLANS:
            self.rows_calls.clear()
        plan = hit[3]
        self.rows_calls[key] = (values, bias, (hit[2], hit[1], values.shape, values.dtype),
                                plan, (bias,) if bias is not None else (), copied,
                                (*x.shape[:-1], self.M))

    def transposed_weight(self) -> SparseWeight:
        if self._t is None:
            indptr_t, indices_t, perm = csr_transpose(self.M, self.K, self.indptr, self.indices)
            zeros = np.zeros(self.nnz, np.float32)
            wt = as_sparse_weight(sp.csr_array((zeros, indices_t, indptr_t),
                                               shape=(self.K, self.M)))
            self._t = (wt, torch.from_numpy(perm))
        return self._t[0]

    def backward_kernel(self, values: Tensor) -> SpecializedKernel:
        """The kernel for ``W^T @ G`` (the input gradient) with these values."""
        wt = self.transposed_weight()
        perm = self._t[1]
        return self._cached(("bwd", values.device, values.dtype), values,
                            lambda v: sparse_matmul.specialize(
                                wt.with_values(v.cpu()[perm]), self.schedule))

    def flat_index(self, device) -> Tensor:
        """``row * K + col`` of every nonzero, CSR order, on ``device``."""
        idx = self._index.get(device)
        if idx is None:
            rows = np.repeat(np.arange(self.M, dtype=np.int64), np.diff(self.indptr))
            idx = torch.from_numpy(rows * self.K + self.indices).to(device)
            self._index[device] = idx
        return idx

    def refresh(self):
        """Forget the specialised kernels (after writing values through ``.data``)."""
        self._kernels.clear()
        self._planned.clear()
        self.rows_calls.clear()


def _forward_key(X: Tensor, values: Tensor, bias: Optional[Tensor], rows_out: bool = False):
    """What a forward call's checks and kernel depend on besides the values' identity: the
    layouts (type, shape, strides, dtype, device) of X, values and bias, the interpreter
    flag for CPU tensors and the output's layout (``rows_out``); None for tensors the fast path does not describe (subclasses,
    non-strided layouts). One flat tuple, built inline: this runs on every eager call."""
    if type(X) not in _PLAIN or type(values) not in _PLAIN or X.layout is not _STRIDED \
            or values.layout is not _STRIDED:
        return None
    device = X.device
    if bias is None:
        b = None
    elif type(bias) in _PLAIN and bias.layout is _STRIDED:
        b = (bias.shape, bias.stride(), bias.dtype, bias.device)
    else:
        return None
    return (X.shape, X.stride(), X.dtype, device, values.shape, values.stride(), values.dtype,
            values.device, b, interpreting() if device.type != "cuda" else None, rows_out)


def _version(t: Tensor) -> int:
    """The version counter (inference tensors have none: they cannot change outside
    inference mode)."""
    return -1 if t.is_inference() else t._version


def pattern(kernel_id: int) -> SparsePattern:
    p = _PATTERNS.get(int(kernel_id))
    if p is None:
        raise KeyError(f"no sparse pattern is registered under kernel_id={kernel_id} "
                       "(was the layer that owned it freed?)")
    return p


def refresh(kernel_id: int):
    pattern(kernel_id).refresh()


@functools.lru_cache(maxsize=None)
def _key_fields(key: str) -> dict:
    try:
        fields = json.loads(key)
        for name in ("M", "K", "nnz", "schedule", "mask"):
            fields[name]
        return fields
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"not a sparse pattern key: {key[:80]!r}") from None


class _KeyShape:
    """A pattern's shapes as its key states them: what the fake kernels check and return
    (no pattern, no mask data needed)."""

    def __init__(self, key: str):
        f = _key_fields(key)
        self.M, self.K, self.nnz = int(f["M"]), int(f["K"]), int(f["nnz"])
        self.conv = None
        if "conv" in f:
            C_in, kh, kw, stride, padding, dilation = f["conv"]
            self.conv = ConvGeometry(C_in, kh, kw, tuple(stride), tuple(padding), tuple(dilation))

    def output_shape(self, X_shape):
        B, _, H, W = X_shape
        return (B, self.M, *self.conv.output_size(H, W))


def pattern_for(key: str, indptr: Tensor, indices: Tensor) -> "SparsePattern":
    """The pattern named ``key``: the registered one, or (in a process that did not build it,
    e.g. one running a loaded ``torch.export`` program) one rebuilt from the key and the CSR
    tensors, which must match the key's mask digest."""
    p = _BY_KEY.get(key)
    if p is not None:
        return p
    with _adopt_lock:
        p = _BY_KEY.get(key)
        if p is None:
            p = _ADOPTED[key] = _rebuild(key, indptr, indices)
    return p


def _rebuild(key: str, indptr: Tensor, indices: Tensor) -> "SparsePattern":
    f = _key_fields(key)
    ip, ix = check_csr(f["M"], f["K"], indptr.detach().cpu().numpy(),
                       indices.detach().cpu().numpy())
    if csr_digest(f["M"], f["K"], ip, ix) != f["mask"]:
        raise ValueError("indptr/indices do not hold the mask the pattern key names (its digest "
                         "differs): pass the layer's own mask buffers with its key")
    schedule = as_schedule(f["schedule"])
    if "conv" in f:
        C_in, kh, kw, stride, padding, dilation = f["conv"]
        return ConvPattern(f["M"], C_in, kh, kw, stride, padding, dilation, ip, ix, schedule, key)
    return SparsePattern(f["M"], f["K"], ip, ix, schedule, key)


# ---------------------------------------------------------------- checks

def _check_device(t: Tensor, name: str):
    if t.device.type == "meta":
        return
    if t.device.type == "cuda":
        if interpreting():
            raise RuntimeError(f"{name} is on {t.device}, but TRITON_INTERPRET=1 runs sparse "
                               "kernels on the CPU: pass CPU tensors")
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise RuntimeError(f"{name} is on {t.device}: sparse kernels run on CUDA tensors (or on CPU "
                       "tensors under the Triton interpreter, TRITON_INTERPRET=1 set before "
                       "triton is imported). There is no dense fallback.")


def _check_spmm(X: Tensor, values: Tensor, bias: Optional[Tensor], p: SparsePattern):
    if X.dim() != 2 or X.shape[0] != p.K:
        raise ValueError(f"X must be ({p.K}, N), got shape {tuple(X.shape)}")
    _check_values_bias(X, values, bias, p)


def _check_values_bias(X: Tensor, values: Tensor, bias: Optional[Tensor], p):
    """The layer's values and bias agree with the pattern and with X; X is on a usable device."""
    if values.shape != (p.nnz,):
        raise ValueError(f"values must have shape ({p.nnz},), got {tuple(values.shape)}")
    if values.dtype != X.dtype:
        raise TypeError(f"values are {values.dtype} but X is {X.dtype}; they must match")
    if values.device != X.device:
        raise ValueError(f"values are on {values.device} but X is on {X.device}")
    if bias is not None:
        if bias.shape != (p.M,):
            raise ValueError(f"bias must have shape ({p.M},), got {tuple(bias.shape)}")
        if bias.dtype != X.dtype or bias.device != X.device:
            raise TypeError(f"bias must be {X.dtype} on {X.device}, got {bias.dtype} on "
                            f"{bias.device}")
    _check_device(X, "X")


# ---------------------------------------------------------------- the ops

def spmm_direct(X: Tensor, values: Tensor, bias: Optional[Tensor], kernel_id: int,
                rows_out: bool = False) -> Tensor:
    """What :func:`spmm` runs, called without the dispatcher: for eager calls that need no
    autograd (it saves the custom op's per-call overhead; invisible to ``torch.compile``).
    ``rows_out``: Y's transpose is row-major (see :meth:`SparsePattern.spmm`)."""
    return pattern(kernel_id).spmm(X, values, bias, rows_out)


@torch.library.custom_op("sparsert::spmm", mutates_args=())
def spmm(X: Tensor, values: Tensor, bias: Optional[Tensor], indptr: Tensor, indices: Tensor,
         key: str) -> Tensor:
    """``W @ X (+ bias[:, None])`` for the pattern ``key`` (mask ``indptr``/``indices``) with
    nonzeros ``values``."""
    return spmm_direct(X, values, bias, pattern_for(key, indptr, indices).kernel_id)


@spmm.register_fake
def _spmm_fake(X, values, bias, indptr, indices, key):
    p = _KeyShape(key)
    _check_spmm(X, values, bias, p)
    return X.new_empty((p.M, X.shape[1]))


@torch.library.custom_op("sparsert::spmm_t", mutates_args=())
def spmm_t(G: Tensor, values: Tensor, indptr: Tensor, indices: Tensor, key: str) -> Tensor:
    """``W^T @ G`` (K, N) for ``G`` of shape (M, N): the input gradient of :func:`spmm`."""
    p = pattern_for(key, indptr, indices)
    _check_spmm_t(G, values, p)
    return p.backward_kernel(values)(G)


def _check_spmm_t(G, values, p):
    if G.dim() != 2 or G.shape[0] != p.M:
        raise ValueError(f"G must be ({p.M}, N), got shape {tuple(G.shape)}")
    if values.shape != (p.nnz,) or values.dtype != G.dtype:
        raise ValueError(f"values must be ({p.nnz},) {G.dtype}, got {tuple(values.shape)} "
                         f"{values.dtype}")
    _check_device(G, "G")


@spmm_t.register_fake
def _spmm_t_fake(G, values, indptr, indices, key):
    p = _KeyShape(key)
    _check_spmm_t(G, values, p)
    return G.new_empty((p.K, G.shape[1]))


@torch.library.custom_op("sparsert::spmm_grad_values", mutates_args=())
def spmm_grad_values(G: Tensor, X: Tensor, indptr: Tensor, indices: Tensor,
                     key: str) -> Tensor:
    """``(G @ X^T)`` at the pattern's nonzeros, CSR order: the gradient of ``values``.

    Computed as a dense (M x K) product and a gather: the cost of ``nn.Linear``'s weight
    gradient. (A sampled product over the nonzeros only would be cheaper at high sparsity.)"""
    p = pattern_for(key, indptr, indices)
    dense = torch.matmul(G, X.t())
    return dense.reshape(-1).index_select(0, p.flat_index(G.device))


@spmm_grad_values.register_fake
def _spmm_grad_values_fake(G, X, indptr, indices, key):
    return G.new_empty((_KeyShape(key).nnz,))


def _setup_context(ctx, inputs, output):
    X, values, bias, indptr, indices, key = inputs
    ctx.key = key
    ctx.pattern = _BY_KEY.get(key)   # the graph keeps the pattern alive until backward
    ctx.save_for_backward(X, values, indptr, indices)


def _backward(ctx, grad):
    X, values, indptr, indices = ctx.saved_tensors
    mask = (indptr, indices, ctx.key)
    gx = spmm_t(grad, values, *mask) if ctx.needs_input_grad[0] else None
    gv = spmm_grad_values(grad, X, *mask) if ctx.needs_input_grad[1] else None
    gb = grad.sum(dim=1) if ctx.needs_input_grad[2] else None
    return gx, gv, gb, None, None, None


spmm.register_autograd(_backward, setup_context=_setup_context)


class SpmmFunction(torch.autograd.Function):
    """:func:`spmm` with its autograd formula, outside the dispatcher: for eager calls that
    need gradients (:func:`route`). Same forward, same saved tensors, same backward. (The
    forward takes ``ctx``: ``Function.apply`` binds the arguments with ``inspect`` on every
    call when a separate ``setup_context`` is defined.)"""

    @staticmethod
    def forward(ctx, X, values, bias, indptr, indices, key, rows_out=False):
        Y = pattern_for(key, indptr, indices).spmm(X, values, bias, rows_out)
        _setup_context(ctx, (X, values, bias, indptr, indices, key), Y)
        return Y

    @staticmethod
    def backward(ctx, grad):
        return (*_backward(ctx, grad), None)


# ---------------------------------------------------------------- routing an eager call

#: the ways a layer runs its op
DISPATCH, AUTOGRAD, DIRECT = "dispatch", "autograd", "direct"
_PLAIN = (Tensor, torch.nn.Parameter)
# what route() asks on every call, looked up once (each is read afresh per call)
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_active = torch._C._are_functorch_transforms_active
_tracing_state = torch._C._get_tracing_state
_grad_enabled = torch.is_grad_enabled


def route(x: Tensor, values: Tensor, bias: Optional[Tensor]) -> str:
    """How a layer's call runs: through the custom op (``DISPATCH``) whenever something may
    look at it (``torch.compile`` / ``torch.export`` tracing, ``torch.jit.trace``, a
    ``TorchDispatchMode`` such as fake tensors or FlopCounterMode, a functorch transform, a
    tensor subclass); otherwise the same computation without the dispatcher's per-call cost:
    ``AUTOGRAD`` (:class:`SpmmFunction` / :class:`Conv2dFunction`, the op's own autograd
    formula) when a gradient is needed, else ``DIRECT`` (the kernel call alone)."""
    if (type(x) not in _PLAIN or type(values) not in _PLAIN
            or (bias is not None and type(bias) not in _PLAIN)
            or _is_compiling() or _dispatch_modes() or _functorch_active()
            or _tracing_state() is not None):
        return DISPATCH
    if _grad_enabled() and (x.requires_grad or values.requires_grad
                            or (bias is not None and bias.requires_grad)):
        return AUTOGRAD
    return DIRECT


# ---------------------------------------------------------------- convolutions
#
#   sparsert::sparse_conv2d(X, values, bias?, id)            Y  = conv2d(X, W) (+ bias)   (B, C_out, Ho, Wo)
#   sparsert::sparse_conv2d_grad_input(G, values, H, W, id)  GX = conv2d^T(G, W)          (B, C_in, H, W)
#   sparsert::sparse_conv2d_grad_values(G, X, id)            GV = dL/dW at the mask        (nnz,)
#
# ``W`` (C_out, C_in, kh, kw) is the masked weight whose flattening (C_out, C_in*kh*kw) has the
# nonzeros ``values`` in CSR order. The forward pass is the direct sparse convolution kernel;
# the backward pass uses dense PyTorch convolutions on the masked dense weight
# (``torch.nn.grad.conv2d_input`` / ``conv2d_weight``, the latter gathered at the mask): the
# input gradient of a convolution is a transposed convolution, which has no sparse kernel here.


@functools.lru_cache(maxsize=None)
def conv_program(stride, padding, dilation, with_bias: bool):
    """The DSL program ``conv2d(W, X, ...) (+ bias)`` for one geometry."""
    from dsl import conv2d
    if with_bias:
        def sparse_conv2d_bias(W, X, bias):
            return conv2d(W, X, stride=stride, padding=padding, dilation=dilation) + bias
        return sparse_kernel(sparse_conv2d_bias)

    def sparse_conv2d_plain(W, X):
        return conv2d(W, X, stride=stride, padding=padding, dilation=dilation)
    return sparse_kernel(sparse_conv2d_plain)


class ConvPattern(SparsePattern):
    """A frozen convolution mask: the (C_out, C_in*kh*kw) CSR pattern of the flattened weight
    plus the geometry (stride, padding, dilation; pairs of ints), registered like
    :class:`SparsePattern`. Its forward kernel is the direct sparse convolution."""

    def __init__(self, C_out: int, C_in: int, kh: int, kw: int, stride, padding, dilation,
                 indptr, indices, schedule: Optional[Schedule] = None,
                 key: Optional[str] = None):
        self.conv = ConvGeometry(int(C_in), int(kh), int(kw), _pair(stride, "stride"),
                                 _pair(padding, "padding"), _pair(dilation, "dilation"))
        super().__init__(C_out, C_in * kh * kw, indptr, indices, schedule, key)

    def _key_fields(self) -> dict:
        c = self.conv
        return {**super()._key_fields(),
                "conv": [c.C_in, c.kh, c.kw, list(c.stride), list(c.padding), list(c.dilation)]}

    @property
    def weight_shape(self):
        return (self.M, self.conv.C_in, self.conv.kh, self.conv.kw)

    def __reduce__(self):
        c = self.conv
        return (ConvPattern, (self.M, c.C_in, c.kh, c.kw, c.stride, c.padding, c.dilation,
                              self.indptr, self.indices, self.schedule))

    def __repr__(self):
        c = self.conv
        return (f"<ConvPattern #{self.kernel_id}: {self.weight_shape}, stride={c.stride}, "
                f"padding={c.padding}, dilation={c.dilation}, nnz={self.nnz}, {self.schedule!r}>")

    def forward_kernel(self, values: Tensor, with_bias: bool) -> SpecializedKernel:
        """The kernel for ``conv2d(X, W) (+ bias)`` with these values."""
        c = self.conv
        program = conv_program(c.stride, c.padding, c.dilation, with_bias)
        return self._cached(("fwd", values.device, values.dtype, with_bias), values,
                            lambda v: program.specialize(self.base.with_values(v), self.schedule,
                                                         kernel_size=(c.C_in, c.kh, c.kw)))

    def backward_kernel(self, values: Tensor) -> SpecializedKernel:
        raise NotImplementedError("the input gradient of a sparse convolution is computed by "
                                  "sparse_conv2d_grad_input (dense PyTorch)")

    def dense_weight(self, values: Tensor) -> Tensor:
        """The masked dense (C_out, C_in, kh, kw) weight holding ``values``."""
        flat = values.new_zeros(self.M * self.K)
        flat = flat.index_put((self.flat_index(values.device),), values)
        return flat.view(self.weight_shape)

    def output_shape(self, X_shape):
        B, _, H, W = X_shape
        Ho, Wo = self.conv.output_size(H, W)
        return (B, self.M, Ho, Wo)


def _pair(v, name):
    t = (v, v) if isinstance(v, int) else tuple(int(e) for e in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t


def conv_pattern(kernel_id: int) -> ConvPattern:
    p = pattern(kernel_id)
    if not isinstance(p, ConvPattern):
        raise TypeError(f"kernel_id={kernel_id} is a {type(p).__name__}, not a ConvPattern")
    return p


def _check_conv(X: Tensor, values: Tensor, bias: Optional[Tensor], p: ConvPattern):
    c = p.conv
    if X.dim() != 4 or X.shape[1] != c.C_in:
        raise ValueError(f"X must be (B, {c.C_in}, H, W), got shape {tuple(X.shape)}")
    Ho, Wo = c.output_size(X.shape[2], X.shape[3])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"X of spatial size {tuple(X.shape[2:])} is smaller than the kernel "
                         f"{c.kh}x{c.kw} (dilation {c.dilation}, padding {c.padding})")
    _check_values_bias(X, values, bias, p)


def sparse_conv2d_direct(X: Tensor, values: Tensor, bias: Optional[Tensor],
                         kernel_id: int) -> Tensor:
    """What :func:`sparse_conv2d` runs, without the dispatcher (eager calls without autograd)."""
    return conv_pattern(kernel_id)._forward(X, values, bias, check=_check_conv)


class Conv2dFunction(torch.autograd.Function):
    """:func:`sparse_conv2d` with its autograd formula, outside the dispatcher (see
    :func:`route` and :class:`SpmmFunction`)."""

    @staticmethod
    def forward(ctx, X, values, bias, indptr, indices, key):
        Y = sparse_conv2d_direct(X, values, bias, pattern_for(key, indptr, indices).kernel_id)
        _conv_setup_context(ctx, (X, values, bias, indptr, indices, key), Y)
        return Y


@torch.library.custom_op("sparsert::sparse_conv2d", mutates_args=())
def sparse_conv2d(X: Tensor, values: Tensor, bias: Optional[Tensor], indptr: Tensor,
                  indices: Tensor, key: str) -> Tensor:
    """``conv2d(X, W) (+ bias per channel)`` for the convolution pattern ``key`` (mask
    ``indptr``/``indices``); X (B, C_in, H, W) in any strides (NCHW or channels_last), the
    result (B, C_out, Ho, Wo) contiguous NCHW."""
    return sparse_conv2d_direct(X, values, bias, pattern_for(key, indptr, indices).kernel_id)


def _conv_key_shape(key: str) -> _KeyShape:
    p = _KeyShape(key)
    if p.conv is None:
        raise TypeError("the pattern key names a matrix pattern, not a convolution")
    return p


@sparse_conv2d.register_fake
def _sparse_conv2d_fake(X, values, bias, indptr, indices, key):
    p = _conv_key_shape(key)
    _check_conv(X, values, bias, p)
    return X.new_empty(p.output_shape(X.shape))


@torch.library.custom_op("sparsert::sparse_conv2d_grad_input", mutates_args=())
def sparse_conv2d_grad_input(G: Tensor, values: Tensor, H: int, W: int, indptr: Tensor,
                             indices: Tensor, key: str) -> Tensor:
    """The input gradient: the transposed convolution of ``G`` (B, C_out, Ho, Wo) with the
    masked dense weight, for an input of spatial size (H, W) (dense PyTorch)."""
    p = conv_pattern(pattern_for(key, indptr, indices).kernel_id)
    c = p.conv
    return torch.nn.grad.conv2d_input((G.shape[0], c.C_in, H, W), p.dense_weight(values), G,
                                      c.stride, c.padding, c.dilation)


@sparse_conv2d_grad_input.register_fake
def _sparse_conv2d_grad_input_fake(G, values, H, W, indptr, indices, key):
    return G.new_empty((G.shape[0], _conv_key_shape(key).conv.C_in, H, W))


@torch.library.custom_op("sparsert::sparse_conv2d_grad_values", mutates_args=())
def sparse_conv2d_grad_values(G: Tensor, X: Tensor, indptr: Tensor, indices: Tensor,
                              key: str) -> Tensor:
    """The gradient of ``values``: the dense weight gradient (``conv2d_weight``, the cost of
    ``nn.Conv2d``'s) gathered at the mask, CSR order."""
    p = conv_pattern(pattern_for(key, indptr, indices).kernel_id)
    c = p.conv
    dense = torch.nn.grad.conv2d_weight(X, p.weight_shape, G, c.stride, c.padding, c.dilation)
    return dense.reshape(-1).index_select(0, p.flat_index(G.device))


@sparse_conv2d_grad_values.register_fake
def _sparse_conv2d_grad_values_fake(G, X, indptr, indices, key):
    return G.new_empty((_conv_key_shape(key).nnz,))


def _conv_setup_context(ctx, inputs, output):
    X, values, bias, indptr, indices, key = inputs
    ctx.key = key
    ctx.pattern = _BY_KEY.get(key)   # the graph keeps the pattern alive until backward
    ctx.input_hw = (X.shape[2], X.shape[3])
    ctx.save_for_backward(X, values, indptr, indices)


def _conv_backward(ctx, grad):
    X, values, indptr, indices = ctx.saved_tensors
    mask = (indptr, indices, ctx.key)
    gx = (sparse_conv2d_grad_input(grad, values, ctx.input_hw[0], ctx.input_hw[1], *mask)
          if ctx.needs_input_grad[0] else None)
    gv = sparse_conv2d_grad_values(grad, X, *mask) if ctx.needs_input_grad[1] else None
    gb = grad.sum(dim=(0, 2, 3)) if ctx.needs_input_grad[2] else None
    return gx, gv, gb, None, None, None


sparse_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)
Conv2dFunction.backward = staticmethod(_conv_backward)
