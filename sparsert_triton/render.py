"""Render: kernel IR -> readable Triton source, one small rule per construct.

Everything is written through :class:`Buffer`, an indented line buffer. The output is a
complete Python module (imports, epilogue helper, functions, kernels) that the compile stage
stores as a real file, so Triton can read it with ``inspect`` and a person can read it too.
"""
from __future__ import annotations

from contextlib import contextmanager

from dsl import Schedule, ir

from . import __version__
from .lower import Fma, GroupFn, LoadX, Lowered, PartFn, Store, TableKernel, UnrolledKernel

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


# ---------------------------------------------------------------- unrolled modes

def cvt(dtype: str, sig) -> str:
    """``.to(accumulator type)``, or nothing when ``dtype`` already is it."""
    return "" if dtype == sig.acc_dtype else f".to({TL_DTYPES[sig.acc_dtype]})"


def render_load(b: Buffer, s: LoadX, acc: str, conv=None, strides=None, padded=False,
                tap_pointers=False):
    """``x = X[col, tile]``; with baked strides the offset is one constant."""
    if conv is None:
        off = (f"{s.col * strides[0]}" if strides else f"{s.col} * sxk")
        b(f"{s.var} = tl.load({'xp' if s.col == 0 else 'xp + ' + off}, mask=nmask, other=0.0){acc}")
        return
    c, dy, dx = conv.tap(s.col)
    if tap_pointers:   # the tap's pointer: in the image, or into the zero buffer
        off = f"{c * strides[1]}" if strides else f"{c} * sxc"
        b(f"{s.var} = tl.load(xt{dy}_{dx}{'' if c == 0 else ' + ' + off}){acc}")
        return
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
    if taps and low.plan.tap_pointers:
        # per tap, the lanes' X pointers at the tap's shift where it reads the image, else the
        # zero buffer: the loads need no mask (channel c reads ZB + c * sxc = 0 off-image)
        for dy in range(g.kh):
            for dx in range(g.kw):
                b(f"xt{dy}_{dx} = tl.where(nmask & vy{dy} & vx{dx}, "
                  f"xp + {_tap_offset(low, dy, dx)}, ZB)")


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


def render_store(b: Buffer, s: Store, low: Lowered):
    acc = s.acc or f"tl.zeros([{low.plan.block_n}], {TL_DTYPES[low.signature.acc_dtype]})"
    args = ", ".join([acc, str(s.row), "0"] + n_args(low) + ["nmask"]
                     + operand_params(low.signature, low.conv is not None))
    b(f"tl.store(Y + {s.row} * sym + yo, "
      f"_epilogue({args}){to_output(low.signature)}, mask=nmask)")


def _unrolled_buffers(low: Lowered) -> list:
    """The unrolled kernels' buffers after X: the values, the zero buffer of ``tap_pointers``
    (launch.py passes them in this order)."""
    return ["V"] + (["ZB"] if low.plan.tap_pointers else [])


def _fn_params(low: Lowered) -> str:
    return ", ".join(["X", *_unrolled_buffers(low), "Y"]
                     + operand_params(low.signature, low.conv is not None)
                     + geom_params(low) + ["pid_n", "N"])


def _kernel_params(low: Lowered, buffers) -> str:
    """A kernel's parameters. A float64 kernel's number operands are annotated ``"fp64"``:
    Triton passes a Python float as fp32 unless the parameter says otherwise."""
    sig, conv = low.signature, low.conv is not None
    f64 = {operand_names(n, k)[0] for n, k in sig.operand_kinds
           if k == "number" and sig.acc_dtype == "float64"}
    ops = [f'{p}: "fp64"' if p in f64 else p for p in operand_params(sig, conv)]
    return ", ".join(["X", *buffers, "Y"] + ops + geom_params(low) + ["N"])


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
                            low.plan.pad_input, low.plan.tap_pointers)
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


def _wait_for_the_kernel_before(b: Buffer, low: Lowered):
    """``pdl``: a kernel the GPU may start while the one before it finishes waits for it
    before any memory access (X may be that kernel's output, Y its input)."""
    if low.plan.pdl:
        b("gdc_wait()   # programmatic dependent launch: the kernel before is complete")


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


# ---------------------------------------------------------------- table mode

def _table_x_load(b: Buffer, low: Lowered, valid: str = "", x: str = "x"):
    """One X row per nonzero: ``x`` (or the name given) for column ``c``. In a
    convolution's tap loop ``c`` is the input channel, ``xt`` the tile shifted to the tap (set
    once per tap, see ``_conv_tap``) and the load unmasked; without tap segments ``c`` is the
    (c_in, dy, dx) column, decoded here, and the in-image mask worked out per nonzero.
    ``valid``: a condition that also masks the load (a segment's prefetched tail)."""
    g, cv = low.conv, cvt(low.signature.x_dtype, low.signature)
    also = f" & {valid}" if valid else ""
    if g is None:
        b(f"{x} = tl.load(xp + c * sxk, mask=nmask{also}, other=0.0){cv}")
        return
    if low.plan.pad_input:   # c: the nonzero's offset into the padded input
        b(f"{x} = tl.load(xp + c, mask={valid}, other=0.0){cv}" if valid else
          f"{x} = tl.load(xp + c){cv}")
        return
    if low.plan.tap_masks:   # c: the nonzero's offset and tap bit; the lane's bits mask it
        off, bit = _tap_mask_fields(low, "c")
        b(f"{x} = tl.load(xp + {off}, mask={valid + ' & ' if valid else ''}((tm & {bit}) != 0), "
          f"other=0.0){cv}")
        return
    if low.plan.tap_segments:
        b(f"{x} = tl.load(xt + c * sxc, mask=nmask{also}, other=0.0){cv}" if valid else
          f"{x} = tl.load(xt + c * sxc){cv}")
        return
    (dh, dw), khw = g.dilation, g.kh * g.kw
    b(f"ci = c // {khw}")
    b(f"dy = (c - ci * {khw}) // {g.kw} * {dh}")
    b(f"dx = (c - ci * {khw}) % {g.kw} * {dw}")
    b(f"{x} = tl.load(xp + (ci * sxc + dy * sxh + dx * sxw), mask=nmask{also} & (iy0 >= -dy) & "
      f"(iy0 < IH - dy) & (ix0 >= -dx) & (ix0 < IW - dx), other=0.0){cv}")


def _table_col(b: Buffer, at: str, name: str):
    b(f"{name} = tl.load(COLS + {at})")


def _table_val(b: Buffer, low: Lowered, at: str, name: str):
    b(f"{name} = tl.load(VALS + {at}){cvt(low.signature.w_dtype, low.signature)}")


def _table_acc(low: Lowered) -> str:
    """The row's accumulator: the tap's ``acc_t`` in a convolution's tap segments."""
    return "acc_t" if low.conv is not None and low.plan.tap_segments else "acc"


def _table_index(b: Buffer, low: Lowered, k: str, s: str = ""):
    """Load nonzero ``k``'s column and value (``c{s}``, ``w{s}``; packed: the word ``nz{s}``)."""
    if low.plan.packs_nonzeros(low.signature):
        b(f"nz{s} = tl.load(NZ + {k})")
        return
    _table_col(b, k, f"c{s}")
    _table_val(b, low, k, f"w{s}")


def _table_fma(b: Buffer, low: Lowered, s: str = "", valid: str = ""):
    """``acc += w * X[c, tile]`` for the nonzero loaded by ``_table_index(..., s)`` (into the
    tap's ``acc_t`` in a convolution)."""
    acc = _table_acc(low)
    if low.plan.packs_nonzeros(low.signature):
        b(f"c = (nz{s} & 0xFFFFFFFF).to(tl.int32)")
        _table_x_load(b, low, valid)
        b(f"{acc} += (nz{s} >> 32).to(tl.int32).to(tl.float32, bitcast=True) * x")
        return
    if s:
        b(f"c = c{s}")
    _table_x_load(b, low, valid)
    b(f"{acc} += w{s} * x")


def _table_step(b: Buffer, low: Lowered):
    """``acc += VALS[k] * X[COLS[k], tile]`` for the nonzero at ``k``."""
    _table_index(b, low, "k")
    _table_fma(b, low)


def _prefetched(b: Buffer, U: int, loop: str, first: str, index, fma, names):
    """``loop`` over chunks of ``U`` nonzeros with the next chunk's columns and values loaded
    one step ahead, so the column -> X-row load chain of a step overlaps the previous step's
    loads and FMAs. ``index(at, s)`` loads entry ``at`` into ``names`` suffixed ``s`` (the first
    chunk at ``first + t``, the next one at ``j + U + t``); ``fma(s)`` consumes them."""
    for t in range(U):
        index(f"{first}{t}", str(t))
    with b.indent(loop):
        for t in range(U):
            index(f"j + {U + t}", f"_next{t}")
        for t in range(U):
            fma(str(t))
        for t in range(U):
            for n in names:
                b(f"{n}{t} = {n}_next{t}")


def _table_chunks_prefetched(b: Buffer, low: Lowered, U: int):
    """The one-row kernel's hot loop, prefetched (the tables are padded by a chunk: the last
    prefetch stays in bounds)."""
    _prefetched(b, U, f"for j in range(start, full, {U}):", "start + ",
                lambda at, s: _table_index(b, low, at, s), lambda s: _table_fma(b, low, s),
                ["nz"] if low.plan.packs_nonzeros(low.signature) else ["c", "w"])


def _table_chunks_prefetched_x(b: Buffer, low: Lowered, U: int):
    """The one-row kernel's hot loop with X one chunk ahead (``prefetch_x``), two chunks per
    step on two sets of registers, so that no loaded value is copied at the loop's end (a
    copy would wait for its load and serialise the steps again). A step at ``j`` adds the
    FMAs of chunk ``j`` on ``xa`` (loaded in the step before) while chunk ``j + U``'s X rows
    arrive in ``xb``, then those of ``j + U`` while ``j + 2U``'s arrive in ``xa``; columns
    are loaded a step before their X rows, values a chunk before their FMAs. X loads that
    may lie past the segment are masked to it (the tables are padded by three chunks); after
    the loop, the chunk at ``full2`` (a whole chunk or the tail) and the one after it (the
    tail, or nothing) are added the same way."""
    acc = _table_acc(low)

    def cols(at, name):
        _table_col(b, at, name)

    def vals(at, name):
        _table_val(b, low, at, name)

    def load_x(col, out, at=None):
        b(f"c = {col}")
        # (a vector compare: Triton's interpreter mistypes a broadcast scalar mask)
        _table_x_load(b, low, f"(offs_n * 0 + {at} < end)" if at else "", out)

    def fmas(x, w):
        for t in range(U):
            b(f"{acc} += {w}{t} * {x}{t}")
    b(f"full2 = start + (end - start) // {2 * U} * {2 * U}")
    for t in range(U):
        cols(f"start + {t}", f"c{t}")
        vals(f"start + {t}", f"wa{t}")
        cols(f"start + {U + t}", f"cb{t}")
        vals(f"start + {U + t}", f"wb{t}")
        cols(f"start + {2 * U + t}", f"ca{t}")
    for t in range(U):
        load_x(f"c{t}", f"xa{t}", f"start + {t}")
    with b.indent(f"for j in range(start, full2, {2 * U}):"):
        for t in range(U):
            load_x(f"cb{t}", f"xb{t}")             # chunk j + U: inside the pair
        for t in range(U):
            cols(f"j + {3 * U + t}", f"cb{t}")
        fmas("xa", "wa")
        for t in range(U):
            load_x(f"ca{t}", f"xa{t}", f"j + {2 * U + t}")
        for t in range(U):
            vals(f"j + {2 * U + t}", f"wa{t}")
            cols(f"j + {4 * U + t}", f"ca{t}")
        fmas("xb", "wb")
        for t in range(U):
            vals(f"j + {3 * U + t}", f"wb{t}")
    fmas("xa", "wa")
    for t in range(U):
        load_x(f"cb{t}", f"xb{t}", f"full2 + {U + t}")
    fmas("xb", "wb")


def _table_x_tile(b: Buffer, low: Lowered):
    """A (chunk x block_n) tile of X: ``x`` for the columns ``cols`` (rows where ``kmask`` is
    off read zero). With ``pad_input`` a column is an offset into the padded input."""
    g = low.conv
    if g is None:
        b("x = tl.load(xp[None, :] + cols[:, None] * sxk, "
          "mask=kmask[:, None] & nmask[None, :], other=0.0)")
        return
    if low.plan.pad_input:
        b("x = tl.load(xp[None, :] + cols[:, None], mask=kmask[:, None], other=0.0)")
        return
    if low.plan.tap_masks:
        off, bit = _tap_mask_fields(low, "cols")
        b(f"x = tl.load(xp[None, :] + {off}[:, None], "
          f"mask=kmask[:, None] & ((tm[None, :] & {bit}[:, None]) != 0), other=0.0)")
        return
    (dh, dw), khw = g.dilation, g.kh * g.kw
    b(f"ci = cols // {khw}")
    b(f"dy = ((cols - ci * {khw}) // {g.kw} * {dh})[:, None]")
    b(f"dx = ((cols - ci * {khw}) % {g.kw} * {dw})[:, None]")
    b("iy = iy0[None, :] + dy")
    b("ix = ix0[None, :] + dx")
    b("x = tl.load(xp[None, :] + (ci[:, None] * sxc + dy * sxh + dx * sxw), "
      "mask=kmask[:, None] & nmask[None, :] & (iy >= 0) & (iy < IH) & (ix >= 0) & (ix < IW), "
      "other=0.0)")


def render_table_kernel(b: Buffer, k: TableKernel, low: Lowered):
    p = low.plan
    rule = (_render_table_union if p.use_dot else
            _render_table_split if p.split_k > 1 else _render_table_rows)
    rule(b, k, low)


@contextmanager
def _table_kernel(b: Buffer, k: TableKernel, low: Lowered, doc: str, taps: bool = False):
    """The table kernels' definition, docstring, program ids and column tile."""
    b(_kernel_decorator(low))
    nz = ["NZ"] if low.plan.packs_nonzeros(low.signature) else ["COLS", "VALS"]
    with b.indent(f"def {k.name}({_kernel_params(low, ['ROWS', 'STARTS', 'LENGTHS'] + nz)}):"):
        b(f'"""{doc}"""')
        _wait_for_the_kernel_before(b, low)
        b("g = tl.program_id(0)")
        b("pid_n = tl.program_id(1)")
        _tile(b, low, taps=taps)
        yield
    b()


def _row_segment(b: Buffer, low: Lowered, seg: str):
    """``acc += VALS[j] * X[COLS[j], tile]`` over the table segment ``seg`` (an index into
    ``STARTS``/``LENGTHS``): whole chunks unrolled, then the remainder one by one, so the hot
    loop never tests the segment's end per element."""
    U = low.plan.chunk
    b(f"start = tl.load(STARTS + {seg})")
    b(f"end = start + tl.load(LENGTHS + {seg})")
    if low.plan.prefetch_x:
        _table_chunks_prefetched_x(b, low, U)
        return
    b(f"full = start + (end - start) // {U} * {U}")
    if low.plan.prefetch:
        _table_chunks_prefetched(b, low, U)
    else:
        with b.indent(f"for j in range(start, full, {U}):"):
            with b.indent(f"for t in tl.static_range({U}):"):
                b("k = j + t")
                _table_step(b, low)
    if U > 1 and low.plan.prefetch_tail:
        # the loop's last prefetch (or the preamble) loaded entries full .. full + U - 1:
        # the tail's loads are independent, masked off past the segment (x = 0 there)
        for t in range(U - 1):
            # (a vector compare: Triton's interpreter mistypes a broadcast scalar mask)
            b(f"valid = offs_n * 0 + full + {t} < end")
            _table_fma(b, low, str(t), "valid")
    elif U > 1:
        with b.indent("for k in range(full, end):"):
            _table_step(b, low)


def _conv_tap(b: Buffer, low: Lowered, tap: int):
    """A convolution's kernel tap (dy, dx): ``mt``, the lanes whose shifted input position is
    in the image (and in the tile), and ``xt``, the tile's X pointers shifted to the tap, with
    every other lane pointed at X itself (a valid address for any channel). The tap's loop
    then loads without a mask (no predicated loads, no zero fills per nonzero) into ``acc_t``
    and the lanes outside the image are dropped once, when ``acc_t`` is added to ``acc``: they
    read zero padding, so their sum is exactly zero."""
    dy, dx = divmod(tap, low.conv.kw)
    b(f"# tap (dy, dx) = ({dy}, {dx})")
    b(f"mt = nmask & vy{dy} & vx{dx}")
    b(f"xt = tl.where(mt, xp + {_tap_offset(low, dy, dx)}, X)")
    b(f"acc_t = tl.zeros([{low.plan.block_n}], {TL_DTYPES[low.signature.acc_dtype]})")


#: the most rows of a program that the one-row table kernels unroll (``tl.static_range``);
#: more run in a loop. Each unrolled row repeats its whole hot loop in the kernel, and
#: Triton's compile time grows faster than linearly with it (sm_90, chunks of 16 prefetched:
#: 5 s for 8 rows, 16 s for 16, 100 s for 32 on the CPU; the loop: under 1 s for 32)
UNROLLED_ROWS = 2


def _rows_loop(R: int) -> str:
    """The loop over a program's ``R`` rows: unrolled for a few, a loop beyond."""
    return f"for r in tl.static_range({R}):" if R <= UNROLLED_ROWS else f"for r in range({R}):"


def _render_table_rows(b: Buffer, k: TableKernel, low: Lowered):
    p, sig, g = low.plan, low.signature, low.conv
    R, BN = p.rows_per_program, p.block_n
    ops = operand_params(sig, g is not None)
    acc_t = TL_DTYPES[sig.acc_dtype]
    nz = ("value(NZ[j]) * X[column(NZ[j]), n]" if p.packs_nonzeros(sig)
          else "VALS[j] * X[COLS[j], n]")
    doc = (f"acc[n] = sum_j {nz} over each row's segment; the program's {R} row(s) run in "
           "turn, so X rows they share are re-read from L1.")
    taps = g is not None and p.tap_segments
    if g is not None and p.pad_input:
        doc += (" Convolution: X zero-padded, COLS holding each nonzero's offset into it "
                "(one loop per row, unmasked loads).")
    if g is not None and p.tap_masks:
        doc += (f" Convolution: COLS holding each nonzero's offset into X << {g.tap_bits} | "
                "its tap's bit, tm each lane's in-image bits (one loop per row, masked loads).")
    if taps:
        doc += (f" Convolution: one segment per kernel tap ({g.kh}x{g.kw}), COLS holding the "
                "input channel, X read at the tap's shift under the tap's in-image mask.")
    with _table_kernel(b, k, low, doc, taps=taps):
        with b.indent(_rows_loop(R)):
            b(f"slot = g * {R} + r")
            b("row = tl.load(ROWS + slot)")
            b(f"acc = tl.zeros([{BN}], {acc_t})")
            if not taps:
                _row_segment(b, low, "slot")
            else:
                T = g.kh * g.kw
                for tap in range(T):
                    _conv_tap(b, low, tap)
                    _row_segment(b, low, f"slot * {T} + {tap}")
                    b("acc += tl.where(mt, acc_t, 0.0)")
            _store_row(b, low, ops)


def _store_row(b: Buffer, low: Lowered, ops):
    """``Y[row, tile] = epilogue(acc)`` for one row's ``[block_n]`` accumulator (pad slots,
    row -1, store nothing)."""
    with b.indent("if row >= 0:"):
        args = ", ".join(["acc", "row", "0"] + n_args(low) + ["nmask"] + ops)
        b(f"tl.store(Y + row * sym + yo, _epilogue({args}){to_output(low.signature)}, "
          "mask=nmask)")


def _tile_index(b: Buffer, low: Lowered, at: str, s: str = ""):
    """The columns and values of the nonzeros at ``first + at``, one per row of a tile (zero
    past ``stop``): ``cols{s}``, ``w{s}``, ``kmask{s}``."""
    b(f"kk = first + {at}")
    b(f"kmask{s} = kk < stop")
    b(f"cols{s} = tl.load(COLS + kk, mask=kmask{s}, other=0)")
    b(f"w{s} = tl.load(VALS + kk, mask=kmask{s}, other=0.0){cvt(low.signature.w_dtype, low.signature)}")


def _tile_fma(b: Buffer, low: Lowered, s: str = ""):
    """``acc[i, :] += w[i] * X[cols[i], tile]`` for the entries loaded by ``_tile_index``."""
    if s:
        b(f"cols = cols{s}")
        b(f"kmask = kmask{s}")
    _table_x_tile(b, low)
    b(f"acc += w{s}[:, None] * x{cvt(low.signature.x_dtype, low.signature)}")


def _render_table_split(b: Buffer, k: TableKernel, low: Lowered):
    p, sig = low.plan, low.signature
    R, S, U, BN = p.rows_per_program, p.split_k, p.chunk, p.block_n
    ops = operand_params(sig, low.conv is not None)
    doc = (f"acc[n] = sum_j VALS[j] * X[COLS[j], n] over each row's segment, cut into {S} "
           f"contiguous parts walked side by side (a {S} x {BN} tile) and summed at the end; "
           f"the program's {R} row(s) run in turn.")
    if low.conv is not None and p.pad_input:
        doc += " Convolution: COLS holds each nonzero's offset into the zero-padded X."
    with _table_kernel(b, k, low, doc):
        b(f"sk = tl.arange(0, {S})")
        with b.indent(_rows_loop(R)):
            b(f"slot = g * {R} + r")
            b("row = tl.load(ROWS + slot)")
            b("start = tl.load(STARTS + slot)")
            b("length = tl.load(LENGTHS + slot)")
            b(f"part = (length + {S * U - 1}) // {S * U} * {U}   # per part, whole chunks")
            b("first = start + sk * part")
            b("stop = tl.minimum(first + part, start + length)")
            b(f"acc = tl.zeros([{S}, {BN}], {TL_DTYPES[sig.acc_dtype]})")
            if p.prefetch:
                _prefetched(b, U, f"for j in range(0, part, {U}):", "",
                            lambda at, s: _tile_index(b, low, at, s),
                            lambda s: _tile_fma(b, low, s), ("cols", "w", "kmask"))
            else:
                with b.indent(f"for j in range(0, part, {U}):"):
                    for t in range(U):
                        _tile_index(b, low, f"j + {t}", str(t))
                        _tile_fma(b, low, str(t))
            b("acc = tl.sum(acc, axis=0)")
            _store_row(b, low, ops)


def _store_tile(b: Buffer, low: Lowered, ops):
    """``Y[rows, tile] = epilogue(acc)`` for a (rows x block_n) accumulator; pad rows (-1) skip."""
    args = ", ".join(["acc", "rows[:, None]", "(rows >= 0)[:, None]"]
                     + [f"{a}[None, :]" for a in n_args(low)] + ["nmask[None, :]"] + ops)
    b(f"out = _epilogue({args})")
    b(f"tl.store(Y + rows[:, None] * sym + yo[None, :], out{to_output(low.signature)}, "
      "mask=(rows >= 0)[:, None] & nmask[None, :])")


def _render_table_union(b: Buffer, k: TableKernel, low: Lowered):
    p, sig = low.plan, low.signature
    R, U, BN = p.rows_per_program, p.chunk, p.block_n
    ops = operand_params(sig, low.conv is not None)
    with _table_kernel(b, k, low, f"acc[r, n] = sum_j VALS[j, r] * X[COLS[j], n] over the "
                       f"group's column union, as ({R} x {U}) @ ({U} x {BN}) products."):
        b(f"r = tl.arange(0, {R})")
        b(f"rows = tl.load(ROWS + g * {R} + r)")
        b(f"u = tl.arange(0, {U})")
        b("start = tl.load(STARTS + g)")
        b("end = start + tl.load(LENGTHS + g)")
        acc_t = TL_DTYPES[sig.acc_dtype]
        b(f"acc = tl.zeros([{R}, {BN}], {acc_t})")
        with b.indent(f"for j in range(start, end, {U}):"):
            b("k = j + u")
            b("kmask = k < end")
            b("cols = tl.load(COLS + k)")
            _table_x_tile(b, low)
            b(f"w = tl.load(VALS + k[None, :] * {R} + r[:, None])")
            prec = ("tf32" if p.allow_tf32 else "ieee") if sig.x_dtype == "float32" else "ieee"
            b(f'acc += tl.dot(w.to(x.dtype), x, input_precision="{prec}")')
        _store_tile(b, low, ops)


# ---------------------------------------------------------------- module

def render(low: Lowered, header: str = "") -> str:
    b = Buffer()
    b(f"# Generated by sparsert-triton {__version__}: do not edit (it is a cache entry).")
    b(f"# program : {ir.to_source(low.program.out)}")
    b(f"# schedule: {Schedule(**low.plan.code_fields())!r}")
    b(f"# call    : {low.signature}")
    for line in header.splitlines():
        b(f"# {line}")
    b("import triton")
    b("import triton.language as tl")
    if low.plan.pdl:
        b("from triton.language.extra.cuda import gdc_wait")
    b()
    table = isinstance(low.kernels[0], TableKernel)
    if low.plan.mode == "blocks":
        from .render_blocks import render_blocks_kernel
        render_helpers(b, low, True)
        render_blocks_kernel(b, low.kernels[0], low)
        return b.text()
    # the tile epilogue (rows x columns) for the kernel that computes several rows at once
    render_helpers(b, low, table and low.plan.use_dot)
    for k in low.kernels:
        (render_table_kernel if table else render_unrolled_kernel)(b, k, low)
    return b.text()
