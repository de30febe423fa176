"""``nn.Module`` layers over specialised sparse kernels, and ``sparsify(model)``.

``SparseLinear`` computes ``y = x W^T + b`` for a pruned ``W`` (out x in, frozen mask) as
``Y^T = W @ X^T`` with the custom op ``sparsert::spmm``:

* ``x`` of shape (..., in) is flattened to ``X`` (N, in) (a view for contiguous inputs),
  ``X^T`` is a transposed view (no copy: the kernels take any strides), the kernel writes
  ``Y^T`` (out, N) contiguous and the layer returns ``Y^T.t()`` reshaped to (..., out), a view
  with strides (…, 1, N). A following ``SparseLinear`` therefore reads its ``X^T`` contiguous.
* The only copies: ``reshape`` copies an input whose leading dims cannot be merged into one
  stride; downstream ops that need a contiguous last dim copy the transposed output.

The nonzeros are one Parameter ``values`` (1-D, CSR order), the mask two int64 buffers
``indptr`` (out + 1) and ``indices`` (nnz), so ``state_dict`` holds exactly the sparse weight
and loads into any ``SparseLinear`` of the same shape (its mask is replaced). The schedule
travels as extra state. Kernels are specialised lazily, per device and dtype, at the first
call (see :mod:`sparsert_triton.ops`); ``.to()``, ``.half()``, ``.bfloat16()`` just convert
the parameters and the next call specialises for them.

Kernels run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``; anything else
raises (there is no dense fallback).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from dsl import Schedule

from . import ops
from .canonicalise import plan_for
from .weights import WEIGHT_DTYPES

SPEEDUP_CAP = 10.0


def _csr_of_mask(mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(indptr, indices) of a 2-D mask (nonzero = kept), row-major order."""
    mask = mask.detach().to("cpu") != 0
    rows, cols = mask.nonzero(as_tuple=True)
    indptr = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=mask.shape[0]), 0, out=indptr[1:])
    return indptr, cols.to(torch.int64)


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out x in) sparse under a frozen mask.

    ``mask``: (out, in), nonzero = kept; ``None`` keeps every position (a placeholder to
    ``load_state_dict`` a sparse layer into). Values and bias are initialised as in
    ``nn.Linear``; use :meth:`from_linear` to convert a pruned layer.
    """

    def __init__(self, in_features: int, out_features: int, mask: Optional[Tensor] = None,
                 bias: bool = True, schedule: Optional[Schedule] = None, device=None,
                 dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if mask is None:
            mask = torch.ones(out_features, in_features, dtype=torch.bool)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), "
                             f"got {tuple(mask.shape)}")
        indptr, indices = _csr_of_mask(mask)
        factory = dict(device=device, dtype=dtype)
        self.values = nn.Parameter(torch.empty(indices.shape[0], **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("indptr", indptr.to(device))
        self.register_buffer("indices", indices.to(device))
        self._schedule = schedule or Schedule()
        self._rebuild_pattern()
        self.reset_parameters()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Optional[Tensor] = None,
                    schedule: Optional[Schedule] = None) -> "SparseLinear":
        """From an ``nn.Linear`` and a mask, or, with ``mask=None``, the weight's nonzeros."""
        w = linear.weight.detach()
        mask = (w != 0) if mask is None else (mask.to(w.device) != 0)
        layer = cls(linear.in_features, linear.out_features, mask, linear.bias is not None,
                    schedule, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            layer.values.copy_(w[mask])
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.values.requires_grad_(linear.weight.requires_grad)
        layer.train(linear.training)
        return layer

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
        nn.init.uniform_(self.values, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _rebuild_pattern(self):
        self._pattern = ops.SparsePattern(self.out_features, self.in_features,
                                          self.indptr.cpu().numpy(), self.indices.cpu().numpy(),
                                          self._schedule)

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
        return 1.0 - self.nnz / max(1, self.in_features * self.out_features)

    def refresh(self):
        """Re-read the values at the next call (after writing them through ``.data``)."""
        self._pattern.refresh()

    def mask(self) -> Tensor:
        """The (out, in) boolean mask."""
        m = torch.zeros(self.out_features * self.in_features, dtype=torch.bool,
                        device=self.values.device)
        m[self._pattern.flat_index(self.values.device)] = True
        return m.view(self.out_features, self.in_features)

    def dense_weight(self) -> Tensor:
        """The masked dense weight (out, in); differentiable with respect to ``values``."""
        flat = self.values.new_zeros(self.out_features * self.in_features)
        flat = flat.index_put((self._pattern.flat_index(self.values.device),), self.values)
        return flat.view(self.out_features, self.in_features)

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
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expects input (..., {self.in_features}), "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != self.values.dtype:
            raise TypeError(f"SparseLinear holds {self.values.dtype} values but the input is "
                            f"{x.dtype}; convert one of them (e.g. layer.half())")
        lead = x.shape[:-1]
        X = x.reshape(-1, self.in_features)            # (N, in): a view when x allows it
        spmm = ops.spmm if torch.compiler.is_compiling() or self._needs_grad(x) \
            else ops.spmm_direct                       # same kernel, no dispatcher overhead
        Yt = spmm(X.t(), self.values, self.bias, self.kernel_id)   # (out, N)
        return Yt.t().reshape(*lead, self.out_features)   # view: Y^T stored, Y returned

    def _needs_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (
            x.requires_grad or self.values.requires_grad
            or (self.bias is not None and self.bias.requires_grad))

    # ------------------------------------------------------------ state
    def get_extra_state(self):
        return {"schedule": dataclasses.asdict(self._schedule)}

    def set_extra_state(self, state):
        self._schedule = Schedule(**state["schedule"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        indptr, indices = state_dict.get(prefix + "indptr"), state_dict.get(prefix + "indices")
        if indptr is not None and indices is not None:
            if tuple(indptr.shape) != (self.out_features + 1,) or indices.dim() != 1:
                error_msgs.append(
                    f"{prefix}indptr/indices: shapes {tuple(indptr.shape)}/"
                    f"{tuple(indices.shape)} do not describe a ({self.out_features}, "
                    f"{self.in_features}) mask")
                return
            if indices.shape != self.indices.shape:    # another mask: resize to take it
                self._buffers["indices"] = self.indices.new_empty(indices.shape)
                self.values = nn.Parameter(self.values.new_empty(indices.shape),
                                           requires_grad=self.values.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._rebuild_pattern()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, sparsity={self.sparsity:.3f}, "
                f"schedule={self._schedule!r}")


# ---------------------------------------------------------------- sparsify

@dataclass
class LayerRow:
    """One line of a :class:`SparsifyReport`."""
    layer: str
    kind: str                 # "Linear", "Conv2d", ...
    shape: Tuple[int, ...]
    sparsity: float
    action: str               # "sparse" or "dense"
    mode: str                 # the kernel mode chosen, or why the layer stays dense
    est_speedup: Optional[float]   # estimate 1 / density, capped; None when kept dense


class SparsifyReport(List[LayerRow]):
    """The rows of :func:`sparsify`; ``str(report)`` is a table."""

    @property
    def replaced(self) -> List[LayerRow]:
        return [r for r in self if r.action == "sparse"]

    def __str__(self) -> str:
        head = ("layer", "type", "shape", "sparsity", "action", "mode",
                f"est. speedup (1/density, cap {SPEEDUP_CAP:g}x; not measured)")
        body = [(r.layer, r.kind, "x".join(map(str, r.shape)), f"{100 * r.sparsity:.1f}%",
                 r.action, r.mode, "-" if r.est_speedup is None else f"{r.est_speedup:.2f}x")
                for r in self]
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in body]
        n = len(self.replaced)
        lines.append(f"{n} of {len(self)} listed layers replaced by sparse kernels")
        return "\n".join(lines)


def estimated_speedup(sparsity: float) -> float:
    """A naive model: time proportional to the nonzeros, capped at ``SPEEDUP_CAP``."""
    return min(SPEEDUP_CAP, 1.0 / max(1e-9, 1.0 - sparsity))


ScheduleArg = Union[None, Schedule, Callable[[str, nn.Linear], Optional[Schedule]]]


def _schedule_for(schedule: ScheduleArg, name: str, linear: nn.Linear) -> Optional[Schedule]:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    return schedule(name, linear)


def _tuned_schedule(layer: SparseLinear, N: int, tune_kwargs: dict) -> Schedule:
    """``sparsert_triton.tune.tune`` on this layer's kernel, for ``X^T`` of N columns laid out
    as the layer passes it (a transposed view of a contiguous (N, in) input)."""
    from . import tune as tune_module    # imported lazily: optional, and heavier
    program = ops.sparse_matmul_bias if layer.bias is not None else ops.sparse_matmul
    v = layer.values.detach()
    weight = layer._pattern.base.with_values(v)
    X = torch.randn(N, layer.in_features, device=v.device, dtype=v.dtype).t()
    operands = (layer.bias.detach(),) if layer.bias is not None else ()
    result = tune_module.tune(program, weight, X, *operands, **tune_kwargs)
    schedule = result[0] if isinstance(result, tuple) else result
    if not isinstance(schedule, Schedule):
        raise TypeError(f"sparsert_triton.tune.tune returned {type(result).__name__}; "
                        "expected (Schedule, results)")
    return schedule


def sparsify(model: nn.Module, min_sparsity: float = 0.5, schedule: ScheduleArg = None,
             tune: bool = False, inplace: bool = True, tune_kwargs: Optional[dict] = None,
             tune_n: int = 128) -> Tuple[nn.Module, SparsifyReport]:
    """Replace every ``nn.Linear`` whose weight is at least ``min_sparsity`` zeros by a
    :class:`SparseLinear` (the zeros become the mask); leave everything else.

    ``schedule``: one :class:`Schedule` for all layers, or ``f(name, linear) -> Schedule``.
    ``tune=True`` picks each layer's schedule with ``sparsert_triton.tune.tune``, timed on
    the layer's device for ``tune_n`` rows of input (batch x sequence), keyword arguments in
    ``tune_kwargs`` (e.g. ``budget_s``); the layers must then be on a GPU.
    ``inplace=False`` works on a deep copy. Only exact
    ``nn.Linear`` modules are replaced: subclasses (e.g. the output projection inside
    ``nn.MultiheadAttention``, whose parent reads ``.weight`` directly) are reported and kept.
    ``nn.Conv2d`` layers are reported and kept dense (no sparse convolution yet).
    Returns ``(model, report)``.
    """
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    if not inplace:
        model = copy.deepcopy(model)
    report = SparsifyReport()
    if type(model) is nn.Linear or isinstance(model, nn.Conv2d):   # the model is one layer
        new, row = _consider("", model, min_sparsity, schedule, tune, tune_kwargs or {}, tune_n)
        report.append(row)
        return new, report
    done = {}   # id(module) -> replacement (a module used twice is replaced once)
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) in done:
                if done[id(child)] is not child:
                    setattr(parent, child_name, done[id(child)])
                continue
            row = _consider(name, child, min_sparsity, schedule, tune, tune_kwargs or {}, tune_n)
            if row is None:
                continue
            new, r = row
            done[id(child)] = new
            if new is not child:
                setattr(parent, child_name, new)
            report.append(r)
    return model, report


def _consider(name, module, min_sparsity, schedule, tune, tune_kwargs, tune_n):
    if isinstance(module, nn.Conv2d):
        w = module.weight.detach()
        s = float((w == 0).float().mean())
        return module, LayerRow(name, "Conv2d", tuple(w.shape), s, "dense",
                                "kept: no sparse convolution yet", None)
    if not isinstance(module, nn.Linear):
        return None
    w = module.weight.detach()
    s = float((w == 0).float().mean()) if w.numel() else 0.0
    shape = tuple(w.shape)
    if type(module) is not nn.Linear:
        return module, LayerRow(name, type(module).__name__, shape, s, "dense",
                                "kept: nn.Linear subclass", None)
    if w.dtype not in WEIGHT_DTYPES:
        return module, LayerRow(name, "Linear", shape, s, "dense",
                                f"kept: {w.dtype} weights unsupported", None)
    if s < min_sparsity:
        return module, LayerRow(name, "Linear", shape, s, "dense",
                                f"kept: sparsity < {min_sparsity:g}", None)
    layer = SparseLinear.from_linear(module, schedule=_schedule_for(schedule, name, module))
    if tune:
        layer.schedule = _tuned_schedule(layer, tune_n, tune_kwargs)
    plan = plan_for(layer.schedule, layer._pattern.base, 128, WEIGHT_DTYPES[w.dtype])
    return layer, LayerRow(name, "Linear", shape, s, "sparse", plan.mode, estimated_speedup(s))
