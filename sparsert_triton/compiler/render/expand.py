"""Render the ``expand`` kernel (layout: ``compiler/bitmap.py``): for many columns, the weight
is written out as dense tiles once per call, then multiplied on tensor cores, in one launch.

``sparse_expand_kernel`` has two roles, handed out by ticket: each program first takes the
next ticket from a counter (``CNT[0]``), so tickets follow the order programs start in.

1. Tickets ``0 .. E - 1`` (``E = blocks x G``, ``G = bitmap.expansion_programs``, independent
   of N) expand: ticket ``b G + j`` decodes the K tiles ``j, j + G, j + 2 G, ...`` of row
   block ``b`` (a bit test and a ``popc`` per position, as the bitmap kernel does), stores
   them, zeros included, into the scratch ``SCR`` (row block rows x whole K tiles, X's dtype),
   then counts its share done (``CNT[2 + b]``, a release). Every tile is decoded once per
   call, whatever N.
2. Tickets ``E + b nt + n`` multiply row block ``b`` by column tile ``n``: they wait until
   ``CNT[2 + b]`` reaches ``G`` (an acquire), then ``acc = sum_kt tl.dot(SCR[b, kt],
   X[kt, n])`` in the accumulator dtype, then the epilogue.

A program that waits holds a ticket above every expanding one, and a ticket is taken only by
a program that is running: every share it waits for is done by a program already running,
so the wait ends whatever order the GPU starts programs in. The last program to finish
(``CNT[1]`` counts them) sets the counters back to zero for the next call. One launch where
two kernels took two: an eager call's second launch cost ~4 us of host time.

The scratch is a view of a buffer kept per device, stream and thread, the counters are kept
the same way (``runtime.workspace``); both are made per call under CUDA-graph capture."""
from __future__ import annotations

from ..bitmap import expansion_programs
from .bitmap import _decode, _x_tile
from .common import TL_DTYPES, Buffer, _kernel_params, _store_tile, _tile, \
    _wait_for_the_kernel_before, operand_params

BUFFERS = ["BITS", "WOFF", "ROFF", "TBASE", "VALS", "SCR", "CNT"]


def buffers() -> list:
    """The kernel's buffers after X, in launch order (``runtime.launch.run``)."""
    return list(BUFFERS)


def counters(blocks: int) -> int:
    """Elements of the kernel's counters: the ticket, the programs done, one per row block."""
    return 2 + blocks


def _scratch_tile(low) -> str:
    """Pointers of this program's (rows x T) tile ``kt`` of the scratch."""
    R, T = low.plan.rows_per_program, low.plan.chunk
    kp = low.kernels[0].k_tiles * T
    return (f"SCR + (pid_m * {R} + i)[:, None].to(tl.int64) * {kp} + kt * {T} "
            f"+ tl.arange(0, {T})[None, :]")


def _expand(b: Buffer, low, G: int):
    """The expanding role: ticket ``b G + j`` stores its K tiles of row block ``b``."""
    k = low.kernels[0]
    R, T = low.plan.rows_per_program, low.plan.chunk
    W = T // 32
    b(f"pid_m = ticket // {G}")
    b(f"i = tl.arange(0, {R})")
    b(f"iw = i[:, None] * {W} + tl.arange(0, {W})[None, :]")
    b("lane = tl.arange(0, 32)")
    b("bit = (tl.full([32], 1, tl.int32) << lane)[None, None, :]")
    b("below = bit - 1")
    with b.indent(f"for kt in range(ticket % {G}, {k.k_tiles}, {G}):"):
        _decode(b, low)
        b(f"tl.store({_scratch_tile(low)}, "
          f"tl.reshape(v, [{R}, {T}]).to({TL_DTYPES[low.signature.x_dtype]}))")
    b("tl.debug_barrier()   # every thread's tiles are stored before the share counts")
    b('tl.atomic_add(CNT + 2 + pid_m, 1, sem="release", scope="gpu")')


def _multiply(b: Buffer, low, G: int, E: int, ops):
    """The multiplying role: ticket ``E + b nt + n`` waits for row block ``b``'s shares, then
    multiplies its tiles by column tile ``n``."""
    p, sig, k = low.plan, low.signature, low.kernels[0]
    R, BN = p.rows_per_program, p.block_n
    b(f"pid_m = (ticket - {E}) // tl.cdiv(N, {BN})")
    b(f"pid_n = (ticket - {E}) % tl.cdiv(N, {BN})")
    _tile(b, low)
    b(f"i = tl.arange(0, {R})")
    b(f"rows = tl.where(pid_m * {R} + i < {k.M}, pid_m * {R} + i, -1)")
    b(f"acc = tl.zeros([{R}, {BN}], {TL_DTYPES[sig.acc_dtype]})")
    b('ready = tl.atomic_add(CNT + 2 + pid_m, 0, sem="acquire", scope="gpu")')
    with b.indent(f"while ready < {G}:   # the row block's tiles are being stored"):
        b('ready = tl.atomic_add(CNT + 2 + pid_m, 0, sem="acquire", scope="gpu")')
    prec = "tf32" if sig.x_dtype == "float32" and p.allow_tf32 else "ieee"
    with b.indent(f"for kt in range(0, {k.k_tiles}):"):
        b(f"w = tl.load({_scratch_tile(low)})")
        _x_tile(b, low, "2d")
        # the interpreter's bf16 tl.dot is wrong (triton #11584): float32 operands there
        with b.indent("if _INTERPRETED:"):
            b('acc += tl.dot(w.to(tl.float32), x.to(tl.float32), input_precision="ieee")')
        with b.indent("else:"):
            b(f'acc += tl.dot(w, x.to(w.dtype), input_precision="{prec}")')
    _store_tile(b, low, ops)


def render_expand_kernel(b: Buffer, k, low):
    p = low.plan
    R, T, BN = p.rows_per_program, p.chunk, p.block_n
    blocks = -(-k.M // R)
    G = expansion_programs(blocks, k.k_tiles)
    E = blocks * G
    C = counters(blocks)
    ops = operand_params(low.signature)
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, buffers())}):"):
        b(f'"""Tickets below {E}: SCR[rows, k] = W[rows, k], the {k.k_tiles} K tiles of {T} '
          f"positions of each block of {R} rows in {G} share(s), decoded from a bit per position "
          "and the tile's packed values, VALS[TBASE + ROFF[r] + WOFF[r, w] + popc(BITS[r, w] & "
          f"(2**j - 1))], zero where the bit is clear. The others: acc[r, n] = sum_k "
          f"SCR[r, k] * X[k, n] over a block of {R} rows and a column tile of {BN} on tensor "
          'cores, once the block\'s shares are stored, then the epilogue."""')
        _wait_for_the_kernel_before(b, low)
        b('ticket = tl.atomic_add(CNT, 1, sem="relaxed", scope="gpu")')
        with b.indent(f"if ticket < {E}:"):
            _expand(b, low, G)
        with b.indent("else:"):
            _multiply(b, low, G, E, ops)
        b("# the last program to finish sets the counters back to zero for the next call")
        b('done = tl.atomic_add(CNT + 1, 1, sem="acq_rel", scope="gpu")')
        with b.indent(f"if done == {E - 1} + {blocks} * tl.cdiv(N, {BN}):"):
            b(f"c = tl.arange(0, {1 << (C - 1).bit_length()})")
            b(f"tl.store(CNT + c, tl.zeros_like(c), mask=c < {C})")
    b()
