"""Render the ``blocks`` kernel (layout: ``compiler/blocks.py``): one program per (row block,
column tile, K range), each step one contiguous ``R x U`` load of column indices and of values, a
gather of the ``R x U x BN`` X entries they name, and multiply-adds into an ``R x U x BN``
accumulator that is summed over ``U`` once, after the loop (no cross-lane reduction per
step). With ``split_k`` > 1 the programs of a tile store partial sums in a workspace and the
last to arrive adds them in slice order (deterministic), then applies the epilogue."""
from __future__ import annotations

from .common import (TL_DTYPES, Buffer, _kernel_params, _store_tile, _tile,
                     _wait_for_the_kernel_before, cvt, operand_params)

BUFFERS = ["ROWS", "BASE", "STEPS", "COLS", "VALS"]


def buffers(split: int) -> list:
    """The kernel's buffers after X, in launch order (``runtime.launch.run``)."""
    return BUFFERS + (["WS", "CNT"] if split > 1 else [])


def _steps(b: Buffer, S: int):
    """``first``, ``last``: this program's steps of the block (all of them, or its slice)."""
    b("steps = tl.load(STEPS + pid_m)")
    if S == 1:
        b("first = 0")
        b("last = steps")
        return
    b(f"per = (steps + {S - 1}) // {S}")
    b("first = pid_s * per")
    b("last = tl.minimum(first + per, steps)")


def _loop(b: Buffer, low):
    p, sig = low.plan, low.signature
    R, U, BN = p.rows_per_program, p.chunk, p.block_n
    st = low.x_strides
    sxk = st[0] if st else "sxk"
    b(f"acc = tl.zeros([{R}, {U}, {BN}], {TL_DTYPES[sig.acc_dtype]})")
    b("entry = base + r[:, None] * " + str(U) + " + u[None, :]")
    with b.indent("for s in range(first, last):"):
        b(f"at = entry + s * {R * U}")
        b("col = tl.load(COLS + at).to(tl.int32)")
        b(f"w = tl.load(VALS + at){cvt(sig.w_dtype, sig)}")
        b(f"x = tl.load(xp[None, None, :] + col[:, :, None] * {sxk}, "
          "mask=(col >= 0)[:, :, None] & nmask[None, None, :], "
          f"other=0.0){cvt(sig.x_dtype, sig)}")
        b("acc += w[:, :, None] * x")
    b("acc = tl.sum(acc, axis=1)")


def _fix_up(b: Buffer, low, ops):
    """A slice's partial sums to the workspace; the tile's last slice sums them in order."""
    p = low.plan
    S, BN = p.split_k, p.block_n
    b(f"wsp = WS + (pid_s * {low_m(low)} + rows[:, None]).to(tl.int64) * N + offs_n[None, :]")
    b("live = (rows >= 0)[:, None] & nmask[None, :]")
    b("tl.store(wsp, acc, mask=live)")
    b("tl.debug_barrier()   # every thread's partial sums are stored before it counts")
    b(f"tile = pid_m * tl.cdiv(N, {BN}) + pid_n")
    b('done = tl.atomic_add(CNT + tile, 1, sem="acq_rel", scope="gpu")')
    with b.indent(f"if done == {S - 1}:   # the tile's last slice: sum in slice order"):
        b('acc = tl.load(WS + (rows[:, None]).to(tl.int64) * N + offs_n[None, :], mask=live, '
          'other=0.0, cache_modifier=".cg")')
        with b.indent(f"for t in tl.static_range(1, {S}):"):
            b(f"acc += tl.load(wsp + (t - pid_s) * {low_m(low)} * tl.cast(N, tl.int64), "
              'mask=live, other=0.0, cache_modifier=".cg")')
        _store_tile(b, low, ops)
        b("tl.atomic_xchg(CNT + tile, 0)   # the counter is ready for the next call")


def program_end(b: Buffer, low, ops):
    """A row-block program's end: with ``split_k`` > 1 its partial sums and the K slices'
    fix-up, else the epilogue and store of its tile."""
    if low.plan.split_k > 1:
        _fix_up(b, low, ops)
    else:
        _store_tile(b, low, ops)


def program_start(b: Buffer, low, split: int):
    """A row-block program's start: its (row block, column tile[, K slice]) ids and the column
    tile (the blocks and bitmap kernels' grid is ``(blocks, column tiles, split_k)``)."""
    _wait_for_the_kernel_before(b, low)
    b("pid_m = tl.program_id(0)")
    b("pid_n = tl.program_id(1)")
    if split > 1:
        b("pid_s = tl.program_id(2)")
    _tile(b, low)


def low_m(low) -> int:
    """Rows of the output (the workspace holds ``split_k`` slices of M rows)."""
    return low.kernels[0].M


def render_blocks_kernel(b: Buffer, k, low):
    p, sig = low.plan, low.signature
    R, U, BN, S = p.rows_per_program, p.chunk, p.block_n, p.split_k
    ops = operand_params(sig)
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, buffers(S))}):"):
        b(f'"""acc[r, n] = sum_(s, u) VALS[s, r, u] * X[COLS[s, r, u], n] over a block of {R} '
          f"rows, {U} nonzeros per row and step (16-bit columns where K fits; pad slots "
          f'-1){f", its steps cut into {S} slices" if S > 1 else ""}."""')
        program_start(b, low, S)
        b(f"r = tl.arange(0, {R})")
        b(f"u = tl.arange(0, {U})")
        b(f"rows = tl.load(ROWS + pid_m * {R} + r)")
        # a block starts at whole steps: the column and value loads vectorise
        b(f"base = tl.multiple_of(tl.load(BASE + pid_m), {R * U})")
        _steps(b, S)
        _loop(b, low)
        program_end(b, low, ops)
    b()
