"""Epilogue functions of the DSL.

Each works on a traced symbol (building IR) and, outside tracing, on a torch tensor (so a
decorated function can also be evaluated as a plain PyTorch reference).
"""
from __future__ import annotations

from . import ir
from .trace import Sym, _Activation, _count_product, _fail, _Weight


def _unary(op: str, torch_fn):
    def f(x):
        if isinstance(x, Sym):
            return Sym(ir.Unary(op, x.node))
        if hasattr(x, "dtype") and hasattr(x, "shape"):
            return torch_fn(x)
        _fail(f"`{op}` takes `W @ X` or an expression of it, got {type(x).__name__}")
    f.__name__ = op
    return f


def _torch():
    import torch
    return torch


relu = _unary("relu", lambda t: _torch().relu(t))
relu.__doc__ = "relu(x) = max(x, 0)"
gelu = _unary("gelu", lambda t: _torch().nn.functional.gelu(t))
gelu.__doc__ = "gelu(x) = x/2 (1 + erf(x / sqrt 2)) (the exact form, as torch's default)"
sigmoid = _unary("sigmoid", lambda t: _torch().sigmoid(t))
sigmoid.__doc__ = "sigmoid(x) = 1 / (1 + exp(-x))"
silu = _unary("silu", lambda t: _torch().nn.functional.silu(t))
silu.__doc__ = "silu(x) = x * sigmoid(x)"


def clamp(x, min=None, max=None):
    """clamp(x, min, max) = min(max(x, min), max); bounds are numbers or None."""
    for name, b in (("min", min), ("max", max)):
        if b is not None and not isinstance(b, (int, float)):
            _fail(f"clamp `{name}` must be a number written in the function")
        if b is not None and b != b:
            # torch.clamp gives NaN everywhere; compiled GPU code folds min/max with a NaN
            # constant to the other operand (H100, triton 3.6): refused rather than ambiguous
            _fail(f"clamp `{name}` is NaN: write the bound you mean (None for no bound)")
    if isinstance(x, Sym):
        return Sym(ir.Clamp(x.node, None if min is None else float(min),
                            None if max is None else float(max)))
    return _torch().clamp(x, min, max)


def _pair(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in v)):
        _fail(f"conv2d `{name}` must be an int or a pair of ints, got {v!r}")
    return tuple(int(i) for i in v)


def conv2d(W, X, stride=1, padding=0, dilation=1, groups=1):
    """Direct sparse convolution: ``torch.nn.functional.conv2d(X, W, None, stride, padding,
    dilation)`` with ``W`` (C_out, C_in, kh, kw) sparse and ``X`` (B, C_in, H, W) dense (NCHW).
    ``padding`` is an int, a pair, or ``"same"`` (stride 1). ``groups`` must be 1."""
    if groups != 1:
        _fail(f"conv2d supports groups=1 only, got groups={groups}")
    if not isinstance(W, _Weight) or not isinstance(X, _Activation):
        if hasattr(W, "shape") and hasattr(X, "shape"):
            return _torch().nn.functional.conv2d(X, W, None, stride, padding, dilation)
        _fail("conv2d takes the sparse weight and the activations: `conv2d(W, X, ...)`")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride + dilation) < 1:
        _fail("conv2d stride and dilation must be >= 1")
    if padding == "same":
        if stride != (1, 1):
            _fail("conv2d padding='same' needs stride 1")
    elif padding == "valid":
        padding = (0, 0)
    else:
        padding = _pair(padding, "padding")
        if min(padding) < 0:
            _fail("conv2d padding must be >= 0")
    _count_product()
    return Sym(ir.Conv2d(stride, padding, dilation))
