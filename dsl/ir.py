"""The expression IR that a traced ``@sparse_kernel`` function becomes.

A program computes ``Y = epilogue(W @ X)`` where ``W`` (M x K) is the sparse weight and
``X`` (K x N) the dense activations. The epilogue is an expression tree whose leaves are
``MatMul`` (the accumulator ``acc[m, n] = sum_k W[m, k] X[k, n]``), ``Operand`` (a tensor or
number passed at call time) and ``Const`` (a number written in the function). Nodes are
frozen and hashable so a whole program can be part of a cache key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

UNARY_OPS = ("relu", "gelu", "sigmoid", "silu", "neg")
BINARY_OPS = ("add", "sub", "mul")
DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class MatMul:
    """The sparse product ``W @ X``, accumulated in float32."""


@dataclass(frozen=True)
class Conv2d(MatMul):
    """The sparse convolution ``conv2d(W, X)`` (W: C_out x C_in x kh x kw), as a product
    ``W_flat @ im2col(X)`` computed without materialising ``im2col``. ``padding`` is a pair or
    ``"same"`` (resolved once the kernel size is known)."""
    stride: Tuple[int, int] = (1, 1)
    padding: Union[Tuple[int, int], str] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class Operand:
    """A call-time argument: a scalar, a per-row vector (M,) or a full (M, N) tensor."""
    name: str


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Unary:
    op: str
    x: "Node"


@dataclass(frozen=True)
class Binary:
    op: str
    a: "Node"
    b: "Node"


@dataclass(frozen=True)
class Clamp:
    """min(max(x, lo), hi); a bound is a number or None, never NaN (torch would give NaN
    everywhere, compiled GPU code folds min/max with a NaN constant away: ambiguous)."""
    x: "Node"
    lo: Optional[float]
    hi: Optional[float]

    def __post_init__(self):
        for name, b in (("min", self.lo), ("max", self.hi)):
            if b is not None and b != b:
                raise ValueError(f"clamp `{name}` is NaN: write the bound you mean "
                                 "(None for no bound)")


@dataclass(frozen=True)
class Cast:
    x: "Node"
    dtype: str


Node = Union[MatMul, Conv2d, Operand, Const, Unary, Binary, Clamp, Cast]


def product(node: Node) -> MatMul:
    """The product node (``MatMul`` or ``Conv2d``) of an expression."""
    return next(n for n in walk(node) if isinstance(n, MatMul))


@dataclass(frozen=True)
class Program:
    """A traced function: parameter names and the output expression."""
    name: str
    weight: str                 # name of the sparse parameter
    activation: str             # name of the dense parameter
    operands: Tuple[str, ...]   # the remaining parameters, in call order
    out: Node


def children(node: Node) -> Tuple[Node, ...]:
    if isinstance(node, (Unary, Clamp, Cast)):
        return (node.x,)
    if isinstance(node, Binary):
        return (node.a, node.b)
    return ()


def walk(node: Node):
    """Yield every node of the tree, parents before children."""
    yield node
    for c in children(node):
        yield from walk(c)


def to_source(node: Node) -> str:
    """Render an expression as DSL text (for messages and dumps)."""
    if isinstance(node, Conv2d):
        return (f"conv2d(W, X, stride={node.stride}, padding={node.padding!r}, "
                f"dilation={node.dilation})")
    if isinstance(node, MatMul):
        return "W @ X"
    if isinstance(node, Operand):
        return node.name
    if isinstance(node, Const):
        return repr(node.value)
    if isinstance(node, Unary):
        return f"{node.op}({to_source(node.x)})"
    if isinstance(node, Binary):
        sym = {"add": "+", "sub": "-", "mul": "*"}[node.op]
        return f"({to_source(node.a)} {sym} {to_source(node.b)})"
    if isinstance(node, Clamp):
        return f"clamp({to_source(node.x)}, {node.lo!r}, {node.hi!r})"
    if isinstance(node, Cast):
        return f"{to_source(node.x)}.to({node.dtype!r})"
    raise TypeError(node)
