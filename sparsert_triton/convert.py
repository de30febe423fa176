"""``sparsify(model)``: every pruned ``nn.Linear`` / ``nn.Conv2d`` of a model that a sparse kernel
serves becomes a :class:`~sparsert_triton.nn.SparseLinear` / :class:`~sparsert_triton.nn.SparseConv2d`
(its zeros are the mask), with a :class:`SparsifyReport` of what was replaced, what stayed
dense and why, and each layer's predicted speedup (:mod:`sparsert_triton.estimate`).

Also served as ``sparsert_triton.nn.sparsify`` and ``sparsert_triton.sparsify``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from dsl import Schedule

from . import ops
from .compiler.canonicalise import plan_for
from .estimate import predicted_speedup
from .nn import SparseConv2d, SparseLinear, conv_padding
from .weights import WEIGHT_DTYPES

@dataclass
class LayerRow:
    """One line of a :class:`SparsifyReport`."""
    layer: str
    kind: str                 # "Linear", "Conv2d", ...
    shape: Tuple[int, ...]
    sparsity: float
    action: str               # "sparse" or "dense"
    mode: str                 # the kernel mode chosen, or why the layer stays dense
    #: predicted t_dense / t_sparse on an H100 (:func:`sparsert_triton.estimate.
    #: predicted_speedup`); None where no sparse kernel was considered
    est_speedup: Optional[float]
    est_source: Optional[str] = None   # the measurement the estimate is read from
    n: Optional[int] = None            # the N it is estimated at (Linear: input rows;
                                       # Conv2d: batch x output positions)
    n_assumed: bool = False            # N is a default, not from example_inputs


class SparsifyReport(List[LayerRow]):
    """The rows of :func:`sparsify`; ``str(report)`` is a table, then the sources of its
    estimates (each listed once, rows refer to them as [k])."""

    @property
    def replaced(self) -> List[LayerRow]:
        return [r for r in self if r.action == "sparse"]

    def __str__(self) -> str:
        sources: List[str] = []
        for r in self:
            if r.est_source is not None and r.est_source not in sources:
                sources.append(r.est_source)

        def est(r: LayerRow) -> str:
            if r.est_speedup is None:
                return "-"
            return f"{r.est_speedup:.2f}x [{sources.index(r.est_source) + 1}]"

        assumed = any(r.n_assumed for r in self)
        head = ("layer", "type", "shape", "sparsity", "N (* assumed)" if assumed else "N",
                "action", "mode", "est. speedup (H100, measured model)")
        body = [(r.layer, r.kind, "x".join(map(str, r.shape)), f"{100 * r.sparsity:.1f}%",
                 "-" if r.n is None else f"{r.n}{'*' if r.n_assumed else ''}",
                 r.action, r.mode, est(r))
                for r in self]
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        lines = []
        if assumed:
            lines.append(f"assumed N (*): no example_inputs reached the layer, so a Linear is "
                         f"estimated at tune_n input rows and a Conv2d at {DEFAULT_CONV_N} "
                         "output positions")
        lines += [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in body]
        n = len(self.replaced)
        lines.append(f"{n} of {len(self)} listed layers replaced by sparse kernels")
        if sources:
            lines.append("est. speedup: predicted dense time / sparse kernel time on an H100, "
                         "read from measured ratios (sparsert_triton.estimate):")
            lines += [f"  [{i}] {src}" for i, src in enumerate(sources, 1)]
        return "\n".join(lines)


#: the N a Conv2d's estimate assumes when no example_inputs reach it: 56 x 56 output
#: positions at batch 1 (the largest DLMC ResNet-50 layers at batch 1), in the N range whose
#: measured ratios are the lowest in every dtype (bench/results/conv_h100.csv)
DEFAULT_CONV_N = 3136


ScheduleArg = Union[None, Schedule, Callable[[str, nn.Module], Optional[Schedule]]]
LayoutArg = Union[str, Callable[[str, nn.Module], str]]


def _schedule_for(schedule: ScheduleArg, name: str, module: nn.Module) -> Optional[Schedule]:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    return schedule(name, module)


def _tuned_schedule(layer, shape, tune_kwargs: dict) -> Schedule:
    """``sparsert_triton.tune.tune`` on this layer's kernel for an input of ``shape``: for a
    SparseLinear, ``X^T`` of N = prod(shape[:-1]) columns laid out as the layer passes it (a
    transposed view of a contiguous (N, in) input); for a SparseConv2d, X of that shape."""
    from . import tune as tune_module    # imported lazily: optional, and heavier
    v = layer.values.detach()
    operands = (layer.bias.detach(),) if layer.bias is not None else ()
    if isinstance(layer, SparseConv2d):
        kernel, weight = layer._pattern.forward_kernel(v, layer.bias is not None), None
        X = torch.randn(*shape, device=v.device, dtype=v.dtype)
    else:
        kernel = ops.sparse_matmul_bias if layer.bias is not None else ops.sparse_matmul
        weight = layer._pattern.base.with_values(v)
        N = math.prod(shape[:-1])
        X = torch.randn(N, layer.in_features, device=v.device, dtype=v.dtype).t()
    result = tune_module.tune(kernel, weight, X, *operands, **tune_kwargs)
    schedule = result[0] if isinstance(result, tuple) else result
    if not isinstance(schedule, Schedule):
        raise TypeError(f"sparsert_triton.tune.tune returned {type(result).__name__}; "
                        "expected (Schedule, results)")
    return schedule


def sparsify(model: nn.Module, min_sparsity: float = 0.5, schedule: ScheduleArg = None,
             tune: bool = False, inplace: bool = True, tune_kwargs: Optional[dict] = None,
             tune_n: int = 128, example_inputs: Optional[tuple] = None,
             only_if_faster: bool = False,
             output_layout: LayoutArg = SparseLinear.DEFAULT_OUTPUT_LAYOUT
             ) -> Tuple[nn.Module, SparsifyReport]:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` whose weight is at least ``min_sparsity``
    zeros by a :class:`SparseLinear` / :class:`SparseConv2d` (the zeros become the mask);
    leave everything else.

    ``schedule``: one :class:`Schedule` for all layers, or ``f(name, module) -> Schedule``.
    ``tune=True`` picks each Linear's schedule with ``sparsert_triton.tune.tune``, timed on
    the layer's device for ``tune_n`` rows of input (batch x sequence), keyword arguments in
    ``tune_kwargs`` (e.g. ``budget_s``); the layers must then be on a GPU.
    ``example_inputs``: arguments of one forward pass, ``model(*example_inputs)``, run once
    (no_grad, before any replacement) to record each layer's input shape; with ``tune=True``
    every Linear is then tuned for its real rows of input and every Conv2d for its real
    (B, C_in, H, W). Without it (or for a layer that pass does not reach) convolutions keep
    ``schedule`` and their report row says "not tuned". ``inplace=False`` works on a deep copy. Only exact ``nn.Linear`` /
    ``nn.Conv2d`` modules are replaced: subclasses (e.g. the output projection inside
    ``nn.MultiheadAttention``, whose parent reads ``.weight`` directly) are reported and kept,
    and so are convolutions with ``groups > 1``, a ``padding_mode`` other than ``'zeros'`` or
    asymmetric ``'same'`` padding. Sharing is kept: a module used in several places (twice in
    an ``nn.Sequential``, under two attribute names) becomes one sparse layer used in all of
    them (one report row, its first name); layers whose weight or bias Parameter another
    module also holds (tied weights) stay dense, since a copy would break the tie. Returns
    ``(model, report)``.

    The report's ``est_speedup`` per layer is a prediction, ``t_dense / t_sparse`` on an
    H100, read from measured ratios (:func:`sparsert_triton.estimate.predicted_speedup`) for
    the layer's planned kernel mode, dtype, density and N: a Linear's rows of input (batch x
    sequence) and a Conv2d's batch x output positions as ``example_inputs`` gives them, else
    ``tune_n`` rows for a Linear and ``DEFAULT_CONV_N`` positions for a Conv2d (marked
    "assumed"). float32 layers are compared with dense float32 as PyTorch would run it: on
    TF32 tensor cores where ``torch.backends.cudnn.allow_tf32`` (convolutions, on by
    default) or ``torch.backends.cuda.matmul.allow_tf32`` (Linear, off by default) is set.
    ``only_if_faster=True`` keeps a layer dense where that prediction is below 1.0x; its row
    says "kept: predicted 0.62x" with the estimate's source.

    ``output_layout``: every new SparseLinear's :attr:`SparseLinear.output_layout`, or
    ``f(name, module) -> layout``: ``"rows"`` (default) returns ``nn.Linear``'s row-major
    output; ``"columns"`` saves the next sparse layer's transposing copy where the output
    only reaches other sparse layers (see the attribute for the measurements behind the
    default).
    """
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    if not inplace:
        model = copy.deepcopy(model)
    report = SparsifyReport()
    shapes, columns = ((_record_shapes(model, example_inputs)) if example_inputs is not None
                       else ({}, {}))
    if not callable(output_layout) and output_layout not in SparseLinear.OUTPUT_LAYOUTS:
        raise ValueError(f"output_layout must be one of {SparseLinear.OUTPUT_LAYOUTS} or a "
                         f"function of (name, module), got {output_layout!r}")
    args = (min_sparsity, schedule, tune, tune_kwargs or {}, tune_n, shapes, columns,
            _shared_parameters(model), only_if_faster, output_layout)
    if isinstance(model, (nn.Linear, nn.Conv2d)):   # the model is one layer
        new, row = _consider("", model, *args)
        report.append(row)
        return new, report
    done = {}   # id(module) -> replacement (a module used twice is replaced once)
    for parent_name, parent in list(model.named_modules()):
        # every slot, not named_children(): that lists a module held twice by one parent once
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) in done:
                if done[id(child)] is not child:
                    setattr(parent, child_name, done[id(child)])
                continue
            row = _consider(name, child, *args)
            if row is None:
                continue
            new, r = row
            done[id(child)] = new
            if new is not child:
                setattr(parent, child_name, new)
            report.append(r)
    return model, report


def _shared_parameters(model: nn.Module) -> set:
    """ids of the Parameters that more than one module holds (tied weights)."""
    owners = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(id(m))
    return {k for k, mods in owners.items() if len(mods) > 1}


def _conv_ineligible(conv: nn.Conv2d) -> Optional[str]:
    """Why a Conv2d cannot become a SparseConv2d, or None."""
    if conv.groups != 1:
        return f"kept: groups={conv.groups} (groups=1 only)"
    if conv.padding_mode != "zeros":
        return f"kept: padding_mode={conv.padding_mode!r} ('zeros' only)"
    try:
        conv_padding(conv.padding, conv.kernel_size, conv.dilation)
    except ValueError:
        return "kept: asymmetric 'same' padding"
    return None


def _record_shapes(model: nn.Module, example_inputs) -> Tuple[dict, dict]:
    """One forward pass of ``example_inputs``; for every exact nn.Linear / nn.Conv2d it
    reaches, id(layer) -> the shape of its first input (an unbatched convolution input gets
    batch 1), and id(layer) -> its N: the columns of its product (a Linear's rows of input,
    prod(shape[:-1]); a Conv2d's batch x output positions)."""
    if not isinstance(example_inputs, tuple):
        raise TypeError("example_inputs must be a tuple of forward arguments, got "
                        f"{type(example_inputs).__name__}")
    shapes, columns, hooks = {}, {}, []

    def record(module, inputs, output):
        x = inputs[0] if inputs else None
        if not isinstance(x, Tensor) or id(module) in shapes:
            return
        shape = tuple(x.shape)
        if type(module) is nn.Conv2d:
            shapes[id(module)] = (1, *shape) if len(shape) == 3 else shape
            if isinstance(output, Tensor):
                columns[id(module)] = output.numel() // max(1, module.out_channels)
        else:
            shapes[id(module)] = shape
            columns[id(module)] = math.prod(shape[:-1])

    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            hooks.append(m.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return shapes, columns


def _consider(name, module, min_sparsity, schedule, tune, tune_kwargs, tune_n, shapes, columns,
              shared, only_if_faster, output_layout):
    if isinstance(module, nn.Conv2d):
        kind, base, why = "Conv2d", nn.Conv2d, _conv_ineligible(module)
    elif isinstance(module, nn.Linear):
        kind, base, why = "Linear", nn.Linear, None
    else:
        return None
    w = module.weight.detach()
    s = float((w == 0).float().mean()) if w.numel() else 0.0
    shape = tuple(w.shape)
    if type(module) is not base:
        why = f"kept: nn.{kind} subclass"
        kind = type(module).__name__
    elif why is None and w.dtype not in WEIGHT_DTYPES:
        why = f"kept: {w.dtype} weights unsupported"
    elif why is None and s < min_sparsity:
        why = f"kept: sparsity < {min_sparsity:g}"
    elif why is None and any(id(p) in shared for p in (module.weight, module.bias)
                             if p is not None):
        why = "kept: weight or bias shared with another module"
    if why is not None:
        return module, LayerRow(name, kind, shape, s, "dense", why, None)
    layer_schedule = _schedule_for(schedule, name, module)
    note = ""
    if kind == "Linear":
        layout = output_layout(name, module) if callable(output_layout) else output_layout
        layer = SparseLinear.from_linear(module, schedule=layer_schedule, output_layout=layout)
        if tune:
            layer.schedule = _tuned_schedule(
                layer, shapes.get(id(module), (tune_n, layer.in_features)), tune_kwargs)
    else:
        layer = SparseConv2d.from_conv2d(module, schedule=layer_schedule)
        if tune and id(module) in shapes:
            layer.schedule = _tuned_schedule(layer, shapes[id(module)], tune_kwargs)
        elif tune:
            note = (" (not tuned: no example_inputs)" if not shapes else
                    " (not tuned: example_inputs did not reach it)")
    conv = kind == "Conv2d"
    assumed = id(module) not in columns
    N = max(1, DEFAULT_CONV_N if conv and assumed else tune_n if assumed else columns[id(module)])
    base, dtype = layer._pattern.base, WEIGHT_DTYPES[w.dtype]
    plan = plan_for(layer.schedule, base, N, dtype, conv=conv)
    est = None
    if base.M > 0 and base.K > 0:
        dense_tf32 = (torch.backends.cudnn.allow_tf32 if conv
                      else torch.backends.cuda.matmul.allow_tf32)
        est = predicted_speedup("conv" if conv else "matmul", base.M, base.K, N, base.density,
                                dtype, plan.mode, dense_tf32=bool(dense_tf32))
    ratio, source = (est.ratio, est.source) if est is not None else (None, None)
    if only_if_faster and est is not None and est.ratio < 1.0:
        return module, LayerRow(name, kind, shape, s, "dense", f"kept: predicted {ratio:.2f}x",
                                ratio, source, N, assumed)
    return layer, LayerRow(name, kind, shape, s, "sparse", plan.mode + note, ratio, source, N,
                           assumed)
