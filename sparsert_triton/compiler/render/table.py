"""The table mode: one loop kernel over host-built buffers (each row's start and length,
its nonzeros' columns and values): the one-row kernel (scalar FMAs, prefetched chunks, the
prefetched tail and X rows; a convolution's tap segments, tap masks or padded input), its
split form (``split_k`` parts of a row side by side) and the tensor-core kernel (``use_dot``
over a row group's column union)."""
from __future__ import annotations

from contextlib import contextmanager

from ..lower import Lowered, TableKernel
from .common import (TL_DTYPES, Buffer, _kernel_decorator, _kernel_params, _store_tile,
                     _tap_mask_fields, _tap_offset, _tile, _wait_for_the_kernel_before, cvt,
                     geom_params, n_args, operand_params, to_output)


def _table_x_load(b: Buffer, low: Lowered, valid: str = "", x: str = "x"):
    """One X row per nonzero: ``x`` (or the name given) for column ``c``. In a
    convolution ``c`` is the nonzero's offset into the padded input (``pad_input``), its
    offset and tap bit (``tap_masks``), or, in a tap loop, the input channel, with ``xt`` the
    tile shifted to the tap (set once per tap, see ``_conv_tap``) and the load unmasked.
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
    if not low.plan.tap_segments:
        raise ValueError("invalid plan: a convolution's one-row table kernel reads the padded "
                         "input, tap masks or tap segments")
    b(f"{x} = tl.load(xt + c * sxc, mask=nmask{also}, other=0.0){cv}" if valid else
      f"{x} = tl.load(xt + c * sxc){cv}")


def _table_col(b: Buffer, at: str, name: str):
    b(f"{name} = tl.load(COLS + {at})")


def _table_val(b: Buffer, low: Lowered, at: str, name: str):
    b(f"{name} = tl.load(VALS + {at}){cvt(low.signature.w_dtype, low.signature)}")


def _table_acc(low: Lowered) -> str:
    """The row's accumulator: the tap's ``acc_t`` in a convolution's tap segments."""
    return "acc_t" if low.conv is not None and low.plan.tap_segments else "acc"


def _table_index(b: Buffer, low: Lowered, k: str, s: str = ""):
    """Load nonzero ``k``'s column and value (``c{s}``, ``w{s}``)."""
    _table_col(b, k, f"c{s}")
    _table_val(b, low, k, f"w{s}")


def _table_fma(b: Buffer, low: Lowered, s: str = "", valid: str = ""):
    """``acc += w * X[c, tile]`` for the nonzero loaded by ``_table_index(..., s)`` (into the
    tap's ``acc_t`` in a convolution)."""
    acc = _table_acc(low)
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
                ["c", "w"])


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


#: the table kernels' buffers after X
BUFFERS = ["ROWS", "STARTS", "LENGTHS", "COLS", "VALS"]
#: the one-row kernel's rows as a job of the transposing kernel (``render/transposed.py``)
ROWS_JOB = "_table_rows"


def render_table_kernel(b: Buffer, k: TableKernel, low: Lowered):
    p = low.plan
    if p.transpose_x:
        from .transposed import render_transposing_kernel
        render_transposing_kernel(b, k, low)
        return
    rule = (_render_table_union if p.use_dot else
            _render_table_split if p.split_k > 1 else _render_table_rows)
    rule(b, k, low)


@contextmanager
def _table_kernel(b: Buffer, k: TableKernel, low: Lowered, doc: str, taps: bool = False,
                  job: bool = False):
    """The table kernels' definition, docstring, program ids and column tile; ``job``: the
    one-row kernel's body as the function ``ROWS_JOB`` of the kernel's parameters and the
    program's (g, pid_n), which a kernel calls."""
    if job:
        b("@triton.jit")
        params = ", ".join(["X", *BUFFERS, "Y"] + operand_params(low.signature)
                           + geom_params(low) + ["N", "g", "pid_n"])
        with b.indent(f"def {ROWS_JOB}({params}):"):
            b(f'"""{doc}"""')
            _tile(b, low, taps=taps)
            yield
        b()
        return
    b(_kernel_decorator(low))
    with b.indent(f"def {k.name}({_kernel_params(low, BUFFERS)}):"):
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
    _table_chunks_prefetched(b, low, U)
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


def _render_table_rows(b: Buffer, k: TableKernel, low: Lowered, job: bool = False):
    p, sig, g = low.plan, low.signature, low.conv
    R, BN = p.rows_per_program, p.block_n
    ops = operand_params(sig, g is not None)
    acc_t = TL_DTYPES[sig.acc_dtype]
    doc = (f"acc[n] = sum_j VALS[j] * X[COLS[j], n] over each row's segment; the program's {R} row(s) run in "
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
    with _table_kernel(b, k, low, doc, taps=taps, job=job):
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
            _prefetched(b, U, f"for j in range(0, part, {U}):", "",
                        lambda at, s: _tile_index(b, low, at, s),
                        lambda s: _tile_fma(b, low, s), ("cols", "w", "kmask"))
            b("acc = tl.sum(acc, axis=0)")
            _store_row(b, low, ops)


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
