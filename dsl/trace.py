"""Trace a Python function with symbolic operands into the expression IR.

``trace(fn)`` calls ``fn(W, X, *operands)`` with symbols. ``W @ X`` must appear exactly once,
with the sparse weight (the first parameter) on the left; everything around it must be an
epilogue op from ``dsl.ops``, ``+``, ``-``, ``*`` with operands or numbers, or ``.to(dtype)``.
Anything else raises :class:`TraceError` naming the offending line of ``fn``.
"""
from __future__ import annotations

import inspect
import linecache
import numbers
import sys
import threading
from typing import Callable

from . import ir

_state = threading.local()


class TraceError(TypeError):
    """The decorated function uses something the DSL cannot compile."""


def _where() -> str:
    """'file:line: source' of the traced function's line that is executing now."""
    code = getattr(_state, "code", None)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            return f"{frame.f_code.co_filename}:{frame.f_lineno}: `{line}`"
        frame = frame.f_back
    return "<unknown line>"


def _fail(msg: str):
    raise TraceError(f"{_where()}: {msg}")


def _count_product():
    if _state.matmuls:
        _fail("only one product (`W @ X` or `conv2d(W, X)`) is allowed per kernel")
    _state.matmuls += 1


def normalise_dtype(dtype) -> str:
    name = str(dtype).replace("torch.", "").replace("tl.", "")
    name = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
            "float": "float32"}.get(name, name)
    if name not in ir.DTYPES:
        raise TraceError(f"unsupported dtype {dtype!r}; expected one of {ir.DTYPES}")
    return name


class Sym:
    """A symbolic value in the epilogue."""

    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node

    @staticmethod
    def lift(value, op: str) -> "Sym":
        if isinstance(value, Sym):
            return value
        if isinstance(value, _Param):
            _fail(f"`{op}` takes the sparse weight or the activations directly; only the "
                  f"product `W @ X` may enter the epilogue")
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return Sym(ir.Const(float(value)))
        _fail(f"`{op}` with a {type(value).__name__} is not supported in the DSL")

    def _bin(self, op, other, reverse=False):
        b = Sym.lift(other, op)
        a, b = (b, self) if reverse else (self, b)
        return Sym(ir.Binary(op, a.node, b.node))

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __neg__(self): return Sym(ir.Unary("neg", self.node))

    def to(self, dtype) -> "Sym":
        try:
            return Sym(ir.Cast(self.node, normalise_dtype(dtype)))
        except TraceError as e:
            _fail(str(e))

    def __bool__(self):
        _fail("Python control flow on symbolic values is not supported (the epilogue is "
              "traced once, not run per element)")

    def __matmul__(self, o):
        _fail("only the sparse weight may stand on the left of `@`")

    def __rmatmul__(self, o):
        _fail("only one product `W @ X` is allowed, and the epilogue cannot be multiplied "
              "by a matrix")

    def __getattr__(self, name):
        _fail(f"`.{name}` is not part of the DSL")

    def __array__(self, *a, **k):
        _fail("symbolic values cannot be converted to arrays")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        _fail(f"`{getattr(func, '__name__', func)}` is not a DSL op; use the epilogue "
              f"functions from `dsl` (relu, gelu, sigmoid, silu, clamp)")


class _Param:
    """A parameter that only enters as ``W @ X``."""

    def __bool__(self):
        _fail("Python control flow on the weight or activations is not supported")


class _Weight(_Param):
    """The sparse weight symbol: it can only be multiplied on the right by X."""

    def __matmul__(self, other):
        if not isinstance(other, _Activation):
            _fail("the sparse weight must be multiplied by the dense activations "
                  "(the second parameter): `W @ X`")
        _count_product()
        return Sym(ir.MatMul())

    def __rmatmul__(self, other):
        _fail("`X @ W` is not supported: the sparse weight must be on the left (`W @ X`)")

    def __getattr__(self, name):
        _fail(f"`W.{name}` is not supported: the sparse weight only enters as `W @ X`")


class _Activation(_Param):
    def __matmul__(self, other):
        _fail("`X @ W` is not supported: the sparse weight must be on the left (`W @ X`)")

    def __rmatmul__(self, other):
        _fail("the dense activations must be multiplied by the sparse weight: `W @ X`")

    def __getattr__(self, name):
        _fail(f"`X.{name}` is not supported: the activations only enter as `W @ X`")


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__neg__", "__truediv__", "__rtruediv__", "__pow__"):
    def _reject(self, *a, _n=_name):
        _fail(f"`{_n.strip('_')}` on the weight or activations directly; only `W @ X` "
              "may enter the epilogue")
    setattr(_Param, _name, _reject)


def trace(fn: Callable) -> ir.Program:
    """Trace ``fn(W, X, *operands)`` into an :class:`ir.Program`."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise TraceError(f"{fn.__qualname__}: parameter `{p.name}` must be a plain "
                             "positional parameter")
    if len(params) < 2:
        raise TraceError(f"{fn.__qualname__} must take at least (W, X): the sparse weight "
                         "and the dense activations")
    names = [p.name for p in params]
    _state.code = fn.__code__
    _state.matmuls = 0
    try:
        try:
            out = fn(_Weight(), _Activation(), *[Sym(ir.Operand(n)) for n in names[2:]])
        except TraceError:
            raise
        except Exception as e:  # unknown call or operation: name the user's line
            tb = e.__traceback__
            line = None
            while tb is not None:
                if tb.tb_frame.f_code is fn.__code__:
                    line = tb.tb_lineno
                tb = tb.tb_next
            src = linecache.getline(fn.__code__.co_filename, line).strip() if line else "?"
            raise TraceError(f"{fn.__code__.co_filename}:{line}: `{src}`: not supported in "
                             f"the DSL ({type(e).__name__}: {e})") from None
    finally:
        _state.code = None
    if not isinstance(out, Sym):
        raise TraceError(f"{fn.__qualname__} must return an expression of `W @ X`, "
                         f"got {type(out).__name__}")
    if not any(isinstance(n, ir.MatMul) for n in ir.walk(out.node)):
        raise TraceError(f"{fn.__qualname__} must compute `W @ X`")
    return ir.Program(fn.__qualname__, names[0], names[1], tuple(names[2:]), out.node)
