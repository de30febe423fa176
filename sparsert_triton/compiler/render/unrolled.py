"""The unrolled modes (``values``, ``indices``): one ``noinline`` function per part (an X
load per column of its rows' union, an FMA per nonzero with the weight a literal or a read of
the packed values, the epilogue and a store per row), one per row group calling its parts, and
kernels that dispatch ``program_id(1)`` to the groups with a balanced ``if`` tree."""
from __future__ import annotations

from ..lower import Fma, GroupFn, LoadX, Lowered, PartFn, Store, UnrolledKernel
from .common import (TL_DTYPES, Buffer, _kernel_decorator, _kernel_params, _tile,
                     _wait_for_the_kernel_before, cvt, geom_params, lit, n_args, operand_params,
                     to_output)


def render_load(b: Buffer, s: LoadX, acc: str, conv=None, strides=None, padded=False):
    """``x = X[col, tile]``; with baked strides the offset is one constant."""
    if conv is None:
        off = (f"{s.col * strides[0]}" if strides else f"{s.col} * sxk")
        b(f"{s.var} = tl.load({'xp' if s.col == 0 else 'xp + ' + off}, mask=nmask, other=0.0){acc}")
        return
    c, dy, dx = conv.tap(s.col)
    oy, ox = dy * conv.dilation[0], dx * conv.dilation[1]
    off = (f"{c * strides[1] + oy * strides[2] + ox * strides[3]}" if strides
           else f"({c} * sxc + {oy} * sxh + {ox} * sxw)")
    if padded:     # in the image by construction; lanes past N point at X
        b(f"{s.var} = tl.load(xp + {off}){acc}")
        return
    b(f"{s.var} = tl.load(xp + {off}, mask=nmask & vy{dy} & vx{dx}, other=0.0){acc}")


def render_fma(b: Buffer, s: Fma, acc: str, acc_dtype: str):
    """``a = x * w`` for a row's first nonzero, then ``a = tl.fma(x, w, a)``: one operation for
    Triton's front end instead of a multiply and an add (13-18% less compile time for the
    large unrolled kernels, same SASS: the multiply-add is contracted either way). A float64
    accumulator keeps ``a += x * w``: ``tl.fma`` would round a literal ``w`` to float32."""
    w = lit(s.value) if s.value is not None else f"tl.load(V + {s.value_index}){acc}"
    if s.first:
        b(f"{s.acc} = {s.var} * {w}")
    elif acc_dtype == "float64":
        b(f"{s.acc} += {s.var} * {w}")
    else:
        b(f"{s.acc} = tl.fma({s.var}, {w}, {s.acc})")


def render_store(b: Buffer, s: Store, low: Lowered):
    acc = s.acc or f"tl.zeros([{low.plan.block_n}], {TL_DTYPES[low.signature.acc_dtype]})"
    args = ", ".join([acc, str(s.row), "0"] + n_args(low) + ["nmask"]
                     + operand_params(low.signature, low.conv is not None))
    b(f"tl.store(Y + {s.row} * sym + yo, "
      f"_epilogue({args}){to_output(low.signature)}, mask=nmask)")


def _unrolled_buffers(low: Lowered) -> list:
    """The unrolled kernels' buffers after X: the values."""
    return ["V"]


def _fn_params(low: Lowered) -> str:
    return ", ".join(["X", *_unrolled_buffers(low), "Y"]
                     + operand_params(low.signature, low.conv is not None)
                     + geom_params(low) + ["pid_n", "N"])


def render_part(b: Buffer, fn: PartFn, low: Lowered):
    b("@triton.jit(noinline=True)")
    with b.indent(f"def {fn.name}({_fn_params(low)}):"):
        _tile(b, low)
        sig = low.signature
        for s in fn.body:
            if isinstance(s, Store):
                render_store(b, s, low)
            elif isinstance(s, LoadX):
                render_load(b, s, cvt(sig.x_dtype, sig), low.conv, low.x_strides,
                            low.plan.pad_input)
            else:
                render_fma(b, s, cvt(sig.w_dtype, sig), sig.acc_dtype)
    b()


def render_group(b: Buffer, fn: GroupFn, low: Lowered):
    b("@triton.jit(noinline=True)")
    with b.indent(f"def {fn.name}({_fn_params(low)}):"):
        for name in fn.calls:
            b(f"{name}({_fn_params(low)})")
        if not fn.calls:
            b("pass")
    b()


def _dispatch(b: Buffer, groups, args: str):
    if len(groups) == 1:
        b(f"{groups[0][1].name}({args})")
        return
    mid = len(groups) // 2
    with b.indent(f"if pid < {groups[mid][0]}:"):
        _dispatch(b, groups[:mid], args)
    with b.indent("else:"):
        _dispatch(b, groups[mid:], args)


def render_unrolled_kernel(b: Buffer, k: UnrolledKernel, low: Lowered):
    for fn in k.parts:
        render_part(b, fn, low)
    for fn in k.groups:
        render_group(b, fn, low)
    b(_kernel_decorator(low))
    with b.indent(f"def {k.name}({_kernel_params(low, _unrolled_buffers(low))}):"):
        b(f'"""Row groups {k.groups[0].name[2:]}..{k.groups[-1].name[2:]}: one per '
          'program_id(1)."""')
        _wait_for_the_kernel_before(b, low)
        b("pid = tl.program_id(1)")
        b("pid_n = tl.program_id(0)   # n-tiles of one group run together: shared code in cache")
        _dispatch(b, list(enumerate(k.groups)), _fn_params(low))
    b()
