"""Render the ``expand`` kernels (layout: ``compiler/bitmap.py``): for many columns, the weight
is written out as dense tiles once per call, then multiplied on tensor cores.

Two jobs, each a function:

* ``_expand_share(..., b, j)`` decodes the K tiles ``j, j + G, j + 2 G, ...`` of row block
  ``b`` (``G = bitmap.expansion_programs``, independent of N; a bit test and a ``popc`` per
  position, as the bitmap kernel does) and stores them, zeros included, into the scratch
  ``SCR`` (row block rows x whole K tiles, X's dtype). Every tile is decoded once per call,
  whatever N;
* ``_multiply_tile(..., b, n)``: ``acc = sum_kt tl.dot(SCR[b, kt], X[kt, n])`` in the
  accumulator dtype, then the epilogue.

and two ways to run them:

1. ``sparse_expand_kernel``, one launch (eager calls: each launch costs the host ~4 us).
   Each program takes the next ticket from a counter (``CNT[0]``), so tickets follow the
   order programs start in. Tickets below ``E = blocks x G`` expand share ``ticket`` and then
   count it done (``CNT[2 + b]``, a release); the others multiply row block ``b`` by column
   tile ``n`` once ``CNT[2 + b]`` reaches ``G`` (an acquire). A program that waits holds a
   ticket above every expanding one, and only a running program takes a ticket: every share
   it waits for is done by a program already running, so the wait ends whatever order the
   GPU starts programs in. The last program to finish (``CNT[1]``) sets the counters back
   to zero for the next call.
2. ``sparse_expand_tiles_kernel`` (grid: blocks x G) then ``sparse_dense_kernel`` (grid:
   blocks x column tiles), which waits for the first (programmatic dependent launch, or
   stream order): for calls captured in a CUDA graph, where launches cost no host time and
   each job runs with its own registers (the multiplying job's pipelined product takes up to
   255, which would hold the expanding job to a fraction of its occupancy).

Both compute the same tiles in the same K order: the same sums. The scratch is a view of a
buffer kept per device, stream and thread, and the counters are kept the same way
(``runtime.workspace``); under capture the scratch is made per call and the two kernels
need no counters."""
from __future__ import annotations

from ..bitmap import expansion_programs
from .bitmap import _decode, _x_tile
from .common import TL_DTYPES, Buffer, _kernel_params, _store_tile, _tile, \
    _wait_for_the_kernel_before, geom_params, operand_params

BUFFERS = ["BITS", "WOFF", "ROFF", "TBASE", "VALS", "SCR", "CNT"]
#: the kernels of one launch, and of a captured call (in launch order)
ONE_LAUNCH = "sparse_expand_kernel"
CAPTURED = ("sparse_expand_tiles_kernel", "sparse_dense_kernel")


def buffers() -> list:
    """The kernels' buffers after X, in launch order (``runtime.launch.run``)."""
    return list(BUFFERS)


def counters(blocks: int) -> int:
    """Elements of the one-launch kernel's counters: the ticket, the programs done, one per
    row block."""
    return 2 + blocks


def _scratch_tile(low) -> str:
    """Pointers of this program's (rows x T) tile ``kt`` of the scratch."""
    R, T = low.plan.rows_per_program, low.plan.chunk
    kp = low.kernels[0].k_tiles * T
    return (f"SCR + (pid_m * {R} + i)[:, None].to(tl.int64) * {kp} + kt * {T} "
            f"+ tl.arange(0, {T})[None, :]")


def _shape(low):
    """(row blocks, expanding programs per block, expanding programs in all)."""
    k = low.kernels[0]
    blocks = -(-k.M // low.plan.rows_per_program)
    G = expansion_programs(blocks, k.k_tiles)
    return blocks, G, blocks * G


def render_expand_share(b: Buffer, low):
    k = low.kernels[0]
    R, T = low.plan.rows_per_program, low.plan.chunk
    W = T // 32
    G = _shape(low)[1]
    b("@triton.jit")
    with b.indent(f"def _expand_share({_args(low)}, pid_m, share):"):
        b(f'"""SCR[rows, k] = W[rows, k] for the K tiles share, share + {G}, ... of the '
          f"{k.k_tiles} tiles of {T} positions of row block pid_m ({R} rows), decoded from a "
          "bit per position and the tile's packed values, VALS[TBASE + ROFF[r] + WOFF[r, w] + "
          'popc(BITS[r, w] & (2**j - 1))], zero where the bit is clear."""')
        b(f"i = tl.arange(0, {R})")
        b(f"iw = i[:, None] * {W} + tl.arange(0, {W})[None, :]")
        b("lane = tl.arange(0, 32)")
        b("bit = (tl.full([32], 1, tl.int32) << lane)[None, None, :]")
        b("below = bit - 1")
        with b.indent(f"for kt in range(share, {k.k_tiles}, {G}):"):
            _decode(b, low)
            b(f"tl.store({_scratch_tile(low)}, "
              f"tl.reshape(v, [{R}, {T}]).to({TL_DTYPES[low.signature.x_dtype]}))")
    b()


def render_multiply_tile(b: Buffer, low):
    p, sig, k = low.plan, low.signature, low.kernels[0]
    R, T, BN = p.rows_per_program, p.chunk, p.block_n
    b("@triton.jit")
    with b.indent(f"def _multiply_tile({_args(low)}, pid_m, pid_n):"):
        b(f'"""acc[r, n] = sum_k SCR[r, k] * X[k, n] over row block pid_m ({R} rows) and '
          f"column tile pid_n ({BN} columns), {k.k_tiles} K tiles of {T} on tensor cores, then "
          'the epilogue."""')
        _tile(b, low)
        b(f"i = tl.arange(0, {R})")
        b(f"rows = tl.where(pid_m * {R} + i < {k.M}, pid_m * {R} + i, -1)")
        b(f"acc = tl.zeros([{R}, {BN}], {TL_DTYPES[sig.acc_dtype]})")
        prec = "tf32" if sig.x_dtype == "float32" and p.allow_tf32 else "ieee"
        with b.indent(f"for kt in range(0, {k.k_tiles}):"):
            b(f"w = tl.load({_scratch_tile(low)})")
            _x_tile(b, low, "2d")
            # the interpreter's bf16 tl.dot is wrong (triton #11584): float32 operands there
            with b.indent("if _INTERPRETED:"):
                b('acc += tl.dot(w.to(tl.float32), x.to(tl.float32), input_precision="ieee")')
            with b.indent("else:"):
                b(f'acc += tl.dot(w, x.to(w.dtype), input_precision="{prec}")')
        _store_tile(b, low, operand_params(sig))
    b()


def _args(low) -> str:
    """The kernel's parameters as a call's arguments (a kernel hands them to a job)."""
    return ", ".join(["X", *buffers(), "Y"] + operand_params(low.signature)
                     + geom_params(low) + ["N"])


def render_one_launch(b: Buffer, low):
    p = low.plan
    blocks, G, E = _shape(low)
    C = counters(blocks)
    BN = p.block_n
    b("@triton.jit")
    with b.indent(f"def {ONE_LAUNCH}({_kernel_params(low, buffers())}):"):
        b(f'"""One launch, by ticket: tickets below {E} expand share ticket % {G} of row block '
          f"ticket // {G}; the others multiply a (row block, column tile) once its block's "
          f'{G} share(s) are stored."""')
        _wait_for_the_kernel_before(b, low)
        b('ticket = tl.atomic_add(CNT, 1, sem="relaxed", scope="gpu")')
        with b.indent(f"if ticket < {E}:"):
            b(f"_expand_share({_args(low)}, ticket // {G}, ticket % {G})")
            b("tl.debug_barrier()   # every thread's tiles are stored before the share counts")
            b(f'tl.atomic_add(CNT + 2 + ticket // {G}, 1, sem="release", scope="gpu")')
        with b.indent("else:"):
            b(f"pid_m = (ticket - {E}) // tl.cdiv(N, {BN})")
            b('ready = tl.atomic_add(CNT + 2 + pid_m, 0, sem="acquire", scope="gpu")')
            with b.indent(f"while ready < {G}:   # the row block's tiles are being stored"):
                b('ready = tl.atomic_add(CNT + 2 + pid_m, 0, sem="acquire", scope="gpu")')
            b(f"_multiply_tile({_args(low)}, pid_m, (ticket - {E}) % tl.cdiv(N, {BN}))")
        b("# the last program to finish sets the counters back to zero for the next call")
        b('done = tl.atomic_add(CNT + 1, 1, sem="acq_rel", scope="gpu")')
        with b.indent(f"if done == {E - 1} + {blocks} * tl.cdiv(N, {BN}):"):
            b(f"c = tl.arange(0, {1 << (C - 1).bit_length()})")
            b(f"tl.store(CNT + c, tl.zeros_like(c), mask=c < {C})")
    b()


def render_captured(b: Buffer, low):
    expand, dense = CAPTURED
    b("@triton.jit")
    with b.indent(f"def {expand}({_kernel_params(low, buffers())}):"):
        b('"""A captured call\'s first launch: program (b, j) expands share j of row block b."""')
        _wait_for_the_kernel_before(b, low)
        b(f"_expand_share({_args(low)}, tl.program_id(0), tl.program_id(1))")
    b()
    b("@triton.jit")
    with b.indent(f"def {dense}({_kernel_params(low, buffers())}):"):
        b('"""A captured call\'s second launch: program (b, n) multiplies row block b by column '
          'tile n (the first launch has ended)."""')
        _wait_for_the_kernel_before(b, low)
        b(f"_multiply_tile({_args(low)}, tl.program_id(0), tl.program_id(1))")
    b()


def render_expand_kernels(b: Buffer, low):
    render_expand_share(b, low)
    render_multiply_tile(b, low)
    render_one_launch(b, low)
    render_captured(b, low)
