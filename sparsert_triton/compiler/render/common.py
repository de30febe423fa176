"""Rules shared by every kernel family: the line buffer, literals, operand parameters, the
epilogue (``expr``, ``render_helpers``), the column tile (``_tile``: offsets, masks, a
convolution's output positions and tap masks), kernel parameters and the ``pdl`` wait."""
from __future__ import annotations

from contextlib import contextmanager

from dsl import ir

from ..lower import Lowered

TL_DTYPES = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16",
             "float64": "tl.float64"}


class Buffer:
    def __init__(self):
        self.lines, self.depth = [], 0

    def __call__(self, line: str = ""):
        self.lines.append("    " * self.depth + line if line else "")

    @contextmanager
    def indent(self, header: str):
        self(header)
        self.depth += 1
        yield
        self.depth -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def lit(v: float) -> str:
    """A float literal that round-trips to the same float64 (so also to float32); infinities
    and NaN as ``float("inf")``, ``float("-inf")``, ``float("nan")`` (Python's ``repr`` writes
    ``inf``/``nan``, names that do not exist in the kernel)."""
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        return f'float("{v!r}")'
    r = repr(v)
    return r if ("." in r or "e" in r) else r + ".0"


# ---------------------------------------------------------------- operands and epilogue

#: the families of an operand's kernel parameters, by kind: its pointer (or value), then its
#: strides (``s``: per row; ``sm``/``sn``: per row and column; a convolution's ``sm``/``sb``/
#: ``sh``/``sw``: per channel, image, y and x)
OPERAND_FAMILIES = {"number": ("op",), "scalar": ("op",), "row": ("op", "s"),
                    "full": ("op", "sm", "sn")}
CONV_FULL_FAMILIES = ("op", "sm", "sb", "sh", "sw")


def operand_names(name: str, kind: str, conv: bool = False) -> list:
    """The kernel parameters of operand ``name``: ``<family>_<name>``. Families have no
    underscore, so the first one in a parameter names its family and the rest the operand:
    two parameters are the same only for the same family and operand, whatever the operands
    are called, and no other generated name starts with a family and an underscore."""
    fams = CONV_FULL_FAMILIES if conv and kind == "full" else OPERAND_FAMILIES[kind]
    return [f"{f}_{name}" for f in fams]


def operand_params(sig, conv: bool = False) -> list:
    """Kernel parameters that carry the epilogue operands, in call order."""
    return [p for name, kind in sig.operand_kinds for p in operand_names(name, kind, conv)]


def geom_params(low) -> list:
    """Stride and size parameters: X (K x N) and Y (M x N), or NCHW X and Y of a convolution."""
    if low.conv is None:
        return ["sxk", "sxn", "sym", "syn"]
    return ["sxb", "sxc", "sxh", "sxw", "IH", "IW", "sym", "syb", "syh", "syw", "Wo", "HWo"]


def n_args(low) -> list:
    """The column index of the output: ``offs_n``, or (image, output row, output column)."""
    return ["offs_n"] if low.conv is None else ["nb", "oy", "ox"]


def _leaf(name: str, kind: str, table: bool, acc: str, conv: bool = False) -> str:
    p, *st = operand_names(name, kind, conv)
    if kind == "number":
        return p
    if kind == "scalar":
        return f"tl.load({p}).to({acc})"
    if kind == "row":
        m = ", mask=rmask, other=0.0" if table else ""
        return f"tl.load({p} + row * {st[0]}{m}).to({acc})"
    m = "rmask & nmask" if table else "nmask"
    n = (f"nb * {st[1]} + oy * {st[2]} + ox * {st[3]}" if conv else f"offs_n * {st[1]}")
    return f"tl.load({p} + row * {st[0]} + {n}, mask={m}, other=0.0).to({acc})"


def rounded_to(dtype: str, sig) -> str:
    """``.to(dtype)`` of an accumulator-typed value; float64 goes to bfloat16 through float32
    (the interpreter converts float64 to bfloat16 wrongly: 3.0 became 2.8e-40). The double
    rounding is at most one bfloat16 unit in the last place off a direct one, and only where
    the float32 value lies on a bfloat16 tie."""
    via = ".to(tl.float32)" if sig.acc_dtype == "float64" and dtype == "bfloat16" else ""
    return f"{via}.to({TL_DTYPES[dtype]})"


def to_output(sig) -> str:
    """The store's conversion of the epilogue's value to Y's dtype."""
    if sig.acc_dtype == "float64" and sig.out_dtype == "bfloat16":
        return rounded_to(sig.out_dtype, sig)
    return ".to(Y.dtype.element_ty)"


def expr(node: ir.Node, sig, table: bool, conv: bool = False) -> str:
    """The epilogue expression over ``acc`` (in the accumulator type)."""
    acc_t = TL_DTYPES[sig.acc_dtype]

    def bound(v):
        # a clamp bound in the accumulator type: triton 3.6's tl.maximum/tl.minimum make a
        # Python float an fp32 tensor before promoting it (a float64 kernel clamped at
        # fp32(-2.015)); + - * keep a Python float exact in either version
        return f"tl.full((), {lit(v)}, tl.float64)" if sig.acc_dtype == "float64" else lit(v)

    def go(n):
        if isinstance(n, ir.MatMul):
            return "acc"
        if isinstance(n, ir.Operand):
            return _leaf(n.name, sig.kind(n.name), table, acc_t, conv)
        if isinstance(n, ir.Const):
            return lit(n.value)
        if isinstance(n, ir.Unary):
            x = go(n.x)
            return {"relu": f"tl.maximum({x}, 0.0, propagate_nan=tl.PropagateNan.ALL)", "gelu": f"_gelu({x})",
                    "sigmoid": f"tl.sigmoid({x})", "silu": f"_silu({x})",
                    "neg": f"(-{x})"}[n.op]
        if isinstance(n, ir.Binary):
            op = {"add": "+", "sub": "-", "mul": "*"}[n.op]
            return f"({go(n.a)} {op} {go(n.b)})"
        if isinstance(n, ir.Clamp):
            x = go(n.x)
            if n.lo is not None:
                x = f"tl.maximum({x}, {bound(n.lo)}, propagate_nan=tl.PropagateNan.ALL)"
            if n.hi is not None:
                x = f"tl.minimum({x}, {bound(n.hi)}, propagate_nan=tl.PropagateNan.ALL)"
            return x
        if isinstance(n, ir.Cast):   # an inner cast rounds; the outer one is the store's
            return f"{go(n.x)}{rounded_to(n.dtype, sig)}.to({acc_t})"
        raise TypeError(n)
    root = node.x if isinstance(node, ir.Cast) else node
    return go(root)


def _kernel_decorator(low: Lowered) -> str:
    """A kernel's ``@triton.jit``. A convolution's column count N (batch x output pixels) is
    not specialised on (divisibility by 16, N == 1): its loads and stores are gathers, so the
    specialisation changes no instruction (same PTX either way, sm_90) while a second batch
    size would compile the whole kernel again."""
    return '@triton.jit(do_not_specialize=["N"])' if low.conv is not None else "@triton.jit"


def render_helpers(b: Buffer, low: Lowered, table: bool):
    sig = low.signature
    used = {n.op for n in ir.walk(low.program.out) if isinstance(n, ir.Unary)}
    if "gelu" in used:
        b("@triton.jit")
        with b.indent("def _gelu(x):"):
            b("return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))")
        b()
    if "silu" in used:
        b("@triton.jit")
        with b.indent("def _silu(x):"):
            b("return x * tl.sigmoid(x)")
        b()
    conv = low.conv is not None
    params = ", ".join(["acc", "row", "rmask" if table else "_unused"] + n_args(low) + ["nmask"]
                       + operand_params(sig, conv))
    b("@triton.jit")
    with b.indent(f"def _epilogue({params}):"):
        b(f'"""{ir.to_source(low.program.out)} (in {sig.acc_dtype})"""')
        b(f"return {expr(low.program.out, sig, table, conv)}")
    b()


# ---------------------------------------------------------------- tiles and kernel parameters

def cvt(dtype: str, sig) -> str:
    """``.to(accumulator type)``, or nothing when ``dtype`` already is it."""
    return "" if dtype == sig.acc_dtype else f".to({TL_DTYPES[sig.acc_dtype]})"


def _in_image(axis: str, d: int) -> str:
    """Lanes whose input row (``axis`` "y") or column ("x") at kernel offset ``d`` (tap index
    times dilation) lies inside the image: ``0 <= i0 + d < extent``."""
    i0, n = ("iy0", "IH") if axis == "y" else ("ix0", "IW")
    return f"({i0} >= {-d}) & ({i0} < {n} - {d})"


def _tap_offset(low: Lowered, dy: int, dx: int) -> str:
    """Kernel tap (dy, dx)'s shift in X, as a constant when X's strides are baked."""
    st, (dh, dw) = low.x_strides, low.conv.dilation
    oy, ox = dy * dh, dx * dw
    return f"{oy * st[2] + ox * st[3]}" if st else f"{oy} * sxh + {ox} * sxw"


def _tile(b: Buffer, low: Lowered, taps: bool = True):
    """Column tile: ``offs_n``, ``nmask``, the X pointers ``xp`` and the Y offsets ``yo``; for a
    convolution also the image/output position and, per kernel tap, the in-image masks."""
    block_n = low.plan.block_n
    b(f"offs_n = pid_n * {block_n} + tl.arange(0, {block_n})")
    b("nmask = offs_n < N")
    g, st = low.conv, low.x_strides
    if g is None:
        b(f"xp = X + offs_n * {st[1] if st else 'sxn'}")
        b("yo = offs_n * syn")
        return
    (sh, sw), (dh, dw) = g.stride, g.dilation
    b("nb = offs_n // HWo")
    b("oy = (offs_n - nb * HWo) // Wo")
    b("ox = offs_n - nb * HWo - oy * Wo")
    sb, sh_, sw_ = (st[0], st[2], st[3]) if st else ("sxb", "sxh", "sxw")
    if low.plan.pad_input or low.plan.tap_masks:
        # xp at each lane's output position (the padded copy: every read is in the image;
        # tap masks: the table's offsets hold the padding and the tap's shift); lanes past N
        # point at X
        b(f"xp = tl.where(nmask, X + nb * {sb} + oy * {sh} * {sh_} + ox * {sw} * {sw_}, X)")
        b("yo = nb * syb + oy * syh + ox * syw")
        if low.plan.tap_masks:
            _tap_mask_bits(b, low)
        return
    _input_origin(b, g)
    b(f"xp = X + nb * {sb} + iy0 * {sh_} + ix0 * {sw_}")
    b("yo = nb * syb + oy * syh + ox * syw")
    if taps:
        for dy in range(g.kh):
            b(f"vy{dy} = {_in_image('y', dy * dh)}")
        for dx in range(g.kw):
            b(f"vx{dx} = {_in_image('x', dx * dw)}")


def _input_origin(b: Buffer, g):
    """``iy0``, ``ix0``: each lane's input position of kernel tap (0, 0) (may lie in the
    padding)."""
    (sh, sw), (ph, pw) = g.stride, g.padding
    b(f"iy0 = oy * {sh} - {ph}")
    b(f"ix0 = ox * {sw} - {pw}")


def _tap_mask_bits(b: Buffer, low: Lowered):
    """``tap_masks``: ``tm``, bit ``t`` set where kernel tap ``t`` reads inside the image
    (none for lanes past N)."""
    g = low.conv
    dh, dw = g.dilation
    _input_origin(b, g)
    b("tm = tl.zeros_like(offs_n)")
    for dy in range(g.kh):
        b(f"vy = {_in_image('y', dy * dh)}")
        for dx in range(g.kw):
            b(f"tm |= (vy & {_in_image('x', dx * dw)}).to(tl.int32) << {dy * g.kw + dx}")
    b("tm = tl.where(nmask, tm, 0)")


def _tap_mask_fields(low: Lowered, c: str):
    """(offset, tap bit) of a ``tap_masks`` table entry ``c``."""
    B = low.conv.tap_bits
    return f"({c} >> {B})", f"({c} & {(1 << B) - 1})"


def _kernel_params(low: Lowered, buffers) -> str:
    """A kernel's parameters. A float64 kernel's number operands are annotated ``"fp64"``:
    Triton passes a Python float as fp32 unless the parameter says otherwise."""
    sig, conv = low.signature, low.conv is not None
    f64 = {operand_names(n, k)[0] for n, k in sig.operand_kinds
           if k == "number" and sig.acc_dtype == "float64"}
    ops = [f'{p}: "fp64"' if p in f64 else p for p in operand_params(sig, conv)]
    return ", ".join(["X", *buffers, "Y"] + ops + geom_params(low) + ["N"])


def _wait_for_the_kernel_before(b: Buffer, low: Lowered):
    """``pdl``: a kernel the GPU may start while the one before it finishes waits for it
    before any memory access (X may be that kernel's output, Y its input)."""
    if low.plan.pdl:
        b("gdc_wait()   # programmatic dependent launch: the kernel before is complete")


def _store_tile(b: Buffer, low: Lowered, ops):
    """``Y[rows, tile] = epilogue(acc)`` for a (rows x block_n) accumulator; pad rows (-1) skip."""
    args = ", ".join(["acc", "rows[:, None]", "(rows >= 0)[:, None]"]
                     + [f"{a}[None, :]" for a in n_args(low)] + ["nmask[None, :]"] + ops)
    b(f"out = _epilogue({args})")
    b(f"tl.store(Y + rows[:, None] * sym + yo[None, :], out{to_output(low.signature)}, "
      "mask=(rows >= 0)[:, None] & nmask[None, :])")
