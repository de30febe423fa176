"""Render the ``bitmap`` kernel (layout: ``compiler/bitmap.py``): one program per (row block,
column tile, K range). Per tile of ``R`` rows and ``T`` positions it loads the tile's words and
offsets, decodes every position in registers (a bit test and a ``popc`` of the bits below it:
no scan across lanes), gathers the set positions' values with one predicated load each, and
multiplies the decoded ``R x T`` tile with the tile's X rows: ``tl.dot`` on tensor cores
(``use_dot``) or multiply-adds into an ``R x T x BN`` accumulator summed once after the loop.
With ``split_k`` > 1 the programs of a row block take contiguous K ranges of tiles and the last
to arrive sums their partial results in order (``blocks.py``'s fix-up)."""
from __future__ import annotations

from .blocks import program_end, program_start
from .common import TL_DTYPES, Buffer, _kernel_params, cvt, operand_params

BUFFERS = ["BITS", "WOFF", "ROFF", "TBASE", "VALS"]


def buffers(split: int) -> list:
    """The kernel's buffers after X, in launch order (``runtime.launch.run``)."""
    return BUFFERS + (["WS", "CNT"] if split > 1 else [])


def render_popc(b: Buffer):
    """``_popc(x)``: set bits of each int32. The GPU's ``popc``; Triton's interpreter lacks
    libdevice's, so there the same count is done with shifts and masks."""
    b("_INTERPRETED = tl.constexpr(os.environ.get('TRITON_INTERPRET', '0') == '1')")
    b()
    b("@triton.jit")
    with b.indent("def _popc(x):"):
        with b.indent("if _INTERPRETED:"):
            b("y = x.to(tl.uint32, bitcast=True)")
            b("y = y - ((y >> 1) & 0x55555555)")
            b("y = (y & 0x33333333) + ((y >> 2) & 0x33333333)")
            b("y = (y + (y >> 4)) & 0x0F0F0F0F")
            b("return ((y * 0x01010101) >> 24).to(tl.int32)")
        with b.indent("else:"):
            b("return libdevice.popc(x)")
    b()


def _tiles(b: Buffer, KT: int, S: int):
    """``first``, ``last``: this program's K tiles (all ``KT``, or its contiguous range)."""
    if S == 1:
        b("first = 0")
        b(f"last = {KT}")
        return
    per = -(-KT // S)
    b(f"first = pid_s * {per}")
    b(f"last = tl.minimum(first + {per}, {KT})")


def _decode(b: Buffer, low):
    """``v``: the tile's ``R x W x 32`` values, zero where the bitmap has no bit."""
    R, W = low.plan.rows_per_program, low.plan.chunk // 32
    b(f"tile = pid_m * {low.kernels[0].k_tiles} + kt")
    b(f"words = tl.load(BITS + tile * {R * W} + iw)")
    b(f"start = tl.load(TBASE + tile) + tl.load(ROFF + tile * {R} + i).to(tl.int32)")
    b(f"excl = start[:, None] + tl.load(WOFF + tile * {R * W} + iw).to(tl.int32)")
    b("w3 = words[:, :, None]")
    b("at = excl[:, :, None] + _popc(w3 & below)")
    b("v = tl.load(VALS + at, mask=(w3 & bit) != 0, other=0.0)")


def _x_tile(b: Buffer, low, shape: str):
    """``x``: X's rows of this tile (``k``) and the column tile, ``shape`` ``"2d"`` (T x BN,
    for ``tl.dot``) or ``"3d"`` (W x 32 x BN)."""
    st = low.x_strides
    sxk = st[0] if st else "sxk"
    K, T = low.kernels[0].K, low.plan.chunk
    if shape == "2d":
        b(f"k = kt * {T} + tl.arange(0, {T})")
        ptr, kdim, ndim = f"xp[None, :] + k[:, None] * {sxk}", "k[:, None]", "nmask[None, :]"
    else:
        b(f"k = kt * {T} + kw[:, :, None]")
        ptr, kdim, ndim = f"xp[None, None, :] + k * {sxk}", "k", "nmask[None, None, :]"
    mask = ndim if K % T == 0 else f"({kdim} < {K}) & {ndim}"
    b(f"x = tl.load({ptr}, mask={mask}, other=0.0)")


def _loop(b: Buffer, low):
    p, sig = low.plan, low.signature
    R, T, BN = p.rows_per_program, p.chunk, p.block_n
    acc_t = TL_DTYPES[sig.acc_dtype]
    if p.use_dot:
        b(f"acc = tl.zeros([{R}, {BN}], {acc_t})")
    else:
        b(f"acc = tl.zeros([{R}, {T // 32}, 32, {BN}], {acc_t})")
    with b.indent("for kt in range(first, last):"):
        _decode(b, low)
        if p.use_dot:
            _x_tile(b, low, "2d")
            prec = ("tf32" if p.allow_tf32 else "ieee") if sig.x_dtype == "float32" else "ieee"
            b(f"acc += tl.dot(tl.reshape(v, [{R}, {T}]).to(x.dtype), x, "
              f'input_precision="{prec}")')
        else:
            _x_tile(b, low, "3d")
            b(f"acc += v{cvt(sig.w_dtype, sig)}[:, :, :, None] * x{cvt(sig.x_dtype, sig)}"
              "[None, :, :, :]")
    if not p.use_dot:
        b("acc = tl.sum(tl.sum(acc, axis=2), axis=1)")


def render_bitmap_kernel(b: Buffer, k, low):
    p = low.plan
    R, T, BN, S = p.rows_per_program, p.chunk, p.block_n, p.split_k
    W = T // 32
    ops = operand_params(low.signature)
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, buffers(S))}):"):
        form = "tl.dot of the decoded tile" if p.use_dot else "multiply-adds"
        b(f'"""acc[r, n] = sum_k W[r, k] * X[k, n] over a block of {R} rows, tile by tile of '
          f"{T} positions ({k.k_tiles} along K): W decoded from a bit per position and the "
          f"tile's packed values, VALS[TBASE + ROFF[r] + WOFF[r, w] + popc(BITS[r, w] & "
          f'(2**j - 1))]; {form}{f", the tiles cut into {S} ranges" if S > 1 else ""}."""')
        program_start(b, low, S)
        b(f"i = tl.arange(0, {R})")
        b(f"iw = i[:, None] * {W} + tl.arange(0, {W})[None, :]")
        b("lane = tl.arange(0, 32)")
        b("bit = (tl.full([32], 1, tl.int32) << lane)[None, None, :]")
        b("below = bit - 1")
        if not p.use_dot:
            b(f"kw = tl.arange(0, {W})[:, None] * 32 + lane[None, :]")
        b(f"rows = tl.where(pid_m * {R} + i < {k.M}, pid_m * {R} + i, -1)")
        _tiles(b, k.k_tiles, S)
        _loop(b, low)
        program_end(b, low, ops)
    b()
