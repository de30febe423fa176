"""Evaluate a traced program with plain torch (float64 by default): the test oracle."""
from __future__ import annotations

import torch

from dsl import ir

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


def evaluate(program: ir.Program, W: torch.Tensor, X: torch.Tensor, *operands,
             dtype=torch.float64, conv=None, acc=None) -> torch.Tensor:
    """``epilogue(W @ X)`` with ``W`` the masked dense weight (M x K); operands as at call
    time. With ``conv`` (a ConvGeometry) the product is ``conv2d(X, W.reshape(M, C_in, kh, kw))``.
    ``acc``: the product itself where the caller computed it (e.g. the NaN/inf rule of
    ``sparsert_triton.testing.documented_product``)."""
    W, X = W.to("cpu", dtype), X.to("cpu", dtype)
    if conv is None:
        acc = torch.matmul(W, X) if acc is None else acc.to("cpu", dtype)
        row_shape = (-1, 1)
    else:
        acc = torch.nn.functional.conv2d(X, W.reshape(W.shape[0], conv.C_in, conv.kh, conv.kw),
                                         None, conv.stride, conv.padding, conv.dilation)
        row_shape = (-1, 1, 1)
    M = W.shape[0]
    env = dict(zip(program.operands, operands))

    def operand(name):
        v = env[name]
        if not isinstance(v, torch.Tensor):
            return torch.tensor(float(v), dtype=dtype, device="cpu")
        v = v.detach().to("cpu", dtype)
        if v.numel() == 1:
            return v.reshape(())
        if v.dim() == 1 and v.numel() == M:
            return v.reshape(row_shape)
        return v

    def go(n):
        if isinstance(n, ir.MatMul):
            return acc
        if isinstance(n, ir.Operand):
            return operand(n.name)
        if isinstance(n, ir.Const):
            return torch.tensor(n.value, dtype=dtype, device="cpu")
        if isinstance(n, ir.Unary):
            x = go(n.x)
            return {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid,
                    "silu": torch.nn.functional.silu, "neg": torch.neg}[n.op](x)
        if isinstance(n, ir.Binary):
            a, b = go(n.a), go(n.b)
            return {"add": a + b, "sub": a - b, "mul": a * b}[n.op]
        if isinstance(n, ir.Clamp):
            x = go(n.x)
            return x if n.lo is None and n.hi is None else torch.clamp(x, n.lo, n.hi)
        if isinstance(n, ir.Cast):
            return go(n.x).to(_TORCH[n.dtype]).to(dtype)
        raise TypeError(n)

    return go(program.out).expand(acc.shape).clone()
