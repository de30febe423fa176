"""A call's arguments: their checks and the call's signature.

One call ``k(X, *operands, out=...)`` of a specialised kernel is checked here, once per call
(or once per call layout, through :mod:`.callplan`): X is a dense float tensor of the right
rank and size on a usable device; each operand is a finite number, a one-element tensor, a
per-row vector or a full tensor of the output's shape (:func:`operand_kind`); ``out`` has the
output's shape, dtype and device and shares memory with neither itself, X nor an operand
(other than as that very operand); nothing spans more than ``2**31`` elements (the kernels'
offsets are 32-bit). The result is the call's ``Signature`` (``compiler/plan.py``): X's, the
weight's and the output's dtypes and each operand's kind, which selects the compiled variant.
:mod:`.launch` then packs the arguments for the kernels and launches them.
"""
from __future__ import annotations

import numbers

import torch

from dsl import ir

from ..compiler.canonicalise import output_dtype
from ..compiler.compile import interpreting
from ..compiler.plan import Signature
from ..weights import TORCH_DTYPES, WEIGHT_DTYPES, SparseWeight

INT32_MAX = 2**31 - 1


def _span(t: torch.Tensor) -> int:
    return sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))


def check_device(t: torch.Tensor, name: str):
    if interpreting():
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}, but TRITON_INTERPRET=1 runs kernels on "
                             "the CPU: pass CPU tensors")
    elif t.device.type != "cuda":
        raise ValueError(f"{name} is on {t.device}: sparse kernels run on CUDA tensors (or on "
                         "CPU tensors with TRITON_INTERPRET=1 set before triton is imported)")


def operand_kind(name: str, v, M: int, full_shape: tuple, device) -> str:
    """number, scalar, row (one value per output row / channel) or full (the output's shape)."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{name} must be finite, got {v}")
        return "number"
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or a number, got {type(v).__name__}")
    if v.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {v.dtype}")
    if v.device != device:
        raise ValueError(f"{name} is on {v.device} but X is on {device}")
    if v.numel() == 1 and v.dim() <= 2:   # broadcast; for M == 1 the same as a row value
        return "scalar"
    row_shape = (M,) + (1,) * (len(full_shape) - 2 if len(full_shape) > 2 else 1)
    kind = ("row" if v.dim() == 1 and v.shape[0] == M or tuple(v.shape) == row_shape else
            "full" if tuple(v.shape) == tuple(full_shape) else None)
    if kind is not None:
        if _span(v) > INT32_MAX:     # (once per call) the kernels' offsets are 32-bit
            raise ValueError(f"{name} spans more than 2**31 elements")
        return kind
    raise ValueError(f"{name} has shape {tuple(v.shape)}; expected a number, a one-element "
                     f"tensor, a per-row vector ({M},) or {row_shape}, or a full "
                     f"{tuple(full_shape)} tensor")


def signature_for(program: ir.Program, weight: SparseWeight, X, operands, out=None) -> Signature:
    """Validate a call ``W @ X`` (X: K x N) and return its signature."""
    _check_x(X, 2, "2-D (K x N)")
    if X.shape[0] != weight.K:
        raise ValueError(f"X has {X.shape[0]} rows but the weight has K={weight.K} columns")
    shape = (weight.M, X.shape[1])
    kinds = _operand_kinds(program, weight.M, shape, X, operands)
    return _finish_signature(program, weight, X, kinds, out, shape, operands)


def _operand_kinds(program, M, shape, X, operands):
    if len(operands) != len(program.operands):
        raise TypeError(f"{program.name} takes {len(program.operands)} operand(s) "
                        f"{program.operands} after X, got {len(operands)}")
    return tuple((n, operand_kind(n, v, M, shape, X.device))
                 for n, v in zip(program.operands, operands))


def conv_signature_for(program: ir.Program, weight: SparseWeight, geom, X, operands, out=None):
    """Validate a convolution call (X: B x C_in x H x W); return (signature, output shape)."""
    _check_x(X, 4, "4-D (B, C_in, H, W) for conv2d")
    if X.shape[1] != geom.C_in:
        raise ValueError(f"X has {X.shape[1]} channels but the weight has C_in={geom.C_in}")
    Ho, Wo = geom.output_size(X.shape[2], X.shape[3])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"X of spatial size {tuple(X.shape[2:])} is smaller than the kernel "
                         f"{geom.kh}x{geom.kw} (dilation {geom.dilation}, padding {geom.padding})")
    shape = (X.shape[0], weight.M, Ho, Wo)
    kinds = _operand_kinds(program, weight.M, shape, X, operands)
    return _finish_signature(program, weight, X, kinds, out, shape, operands), shape


def _check_x(X, dims: int, what: str):
    """X is a dense float tensor of ``dims`` dimensions on a usable device, within int32 offsets."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() != dims:
        raise ValueError(f"X must be {what}, got shape {tuple(X.shape)}")
    if X.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"X must be float32, float16, bfloat16 or float64, got {X.dtype}")
    if X.layout != torch.strided:
        raise TypeError(f"X must be a dense (strided) tensor, got {X.layout}")
    check_device(X, "X")
    if _span(X) > INT32_MAX:
        raise ValueError("X spans more than 2**31 elements; split N into smaller calls")


def _finish_signature(program, weight, X, kinds, out, shape, operands=()) -> Signature:
    xd = WEIGHT_DTYPES[X.dtype]
    sig = Signature(xd, weight.dtype, output_dtype(program, xd), kinds)
    if out is not None:
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
            raise ValueError(f"out must be a {tuple(shape)} tensor")
        if out.dtype != TORCH_DTYPES[sig.out_dtype]:
            raise TypeError(f"out must be {TORCH_DTYPES[sig.out_dtype]}, got {out.dtype}")
        if out.device != X.device:
            raise ValueError(f"out is on {out.device} but X is on {X.device}")
        if _span(out) > INT32_MAX:
            raise ValueError("out spans more than 2**31 elements")
        _check_out_memory(out, X, operands, program.operands)
    elif _numel(shape) - 1 > INT32_MAX:     # (once per call) the output the call allocates
        raise ValueError(f"the output {tuple(shape)} spans more than 2**31 elements (32-bit "
                         "offsets); split N into smaller calls")
    return sig


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ---- out= memory checks (once per call with out=; the kernels write out while they read X
# and the operands, and each element of out must be written once)

def _overlaps_itself(t: torch.Tensor) -> bool:
    """Whether two elements of ``t`` share memory (a zero stride, or strides that interleave).
    Dimensions sorted by stride: none may step less than the span of the smaller ones; a
    layout that fails this yet has distinct offsets (rare) is checked element by element."""
    span = 0
    for st, n in sorted((abs(st), n) for n, st in zip(t.shape, t.stride()) if n > 1):
        if st <= span:
            break
        span += (n - 1) * st
    else:
        return False
    if t.numel() > 1 << 24:
        return True
    offsets = torch.zeros((), dtype=torch.int64)
    for n, st in zip(t.shape, t.stride()):
        offsets = offsets[..., None] + torch.arange(n, dtype=torch.int64) * st
    return torch.unique(offsets).numel() < t.numel()


def _byte_range(t: torch.Tensor):
    lo = t.data_ptr()
    return lo, lo + (_span(t) + 1) * t.element_size()


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory ranges of ``a`` and ``b`` intersect (conservative: interleaved
    views of one buffer count as sharing)."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    (a0, a1), (b0, b1) = _byte_range(a), _byte_range(b)
    return a0 < b1 and b0 < a1


def _check_out_memory(out: torch.Tensor, X: torch.Tensor, operands, names):
    """``out`` must not overlap itself, X or an operand, except an operand that is exactly
    ``out`` (same memory and strides: each element is read by the program that then writes
    it, as in ``k(X, r, out=r)``)."""
    if out.numel() > 1 and _overlaps_itself(out):
        raise ValueError(f"out has elements that share memory (shape {tuple(out.shape)}, "
                         f"strides {out.stride()}, e.g. an expanded tensor): each output "
                         "element needs its own memory")
    if _shares_memory(out, X):
        raise ValueError("out overlaps X in memory: the kernels would overwrite X while they "
                         "read it; pass a separate out")
    for name, v in zip(names, operands):
        if not isinstance(v, torch.Tensor) or not _shares_memory(out, v):
            continue
        same = (v.data_ptr() == out.data_ptr() and v.shape == out.shape
                and v.stride() == out.stride())
        if not same:
            raise ValueError(f"out overlaps {name} in memory (other than as the same tensor): "
                             f"the kernels would overwrite {name} while they read it")
