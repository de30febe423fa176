"""Epilogue functions of the DSL.

Each works on a traced symbol (building IR) and, outside tracing, on a torch tensor (so a
decorated function can also be evaluated as a plain PyTorch reference).
"""
from __future__ import annotations

from . import ir
from .trace import Sym, _fail


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
    if isinstance(x, Sym):
        return Sym(ir.Clamp(x.node, None if min is None else float(min),
                            None if max is None else float(max)))
    return _torch().clamp(x, min, max)
