"""Render the one-row table kernel for a row-major X (``Plan.transpose_x``): X arrives as the
(K, N) view of an (N, K) input whose features are contiguous (K-stride 1: a LayerNorm's output
read by a Linear), and the one-row kernel, which reads a whole row of X along N per nonzero,
would gather each of those N elements from K apart. The kernel first transposes X into a
contiguous ``XT`` (K x N), then runs the rows on it, in one launch (an eager call's copy
kernel would cost the host more than the GPU: bench/NOTES.md, twenty-third session).

Two jobs, each a function:

* ``_transpose_x_share(X, XT, ..., pid_n, share)``: ``XT[k, n] = X[k, n]`` for the ``TK``
  rows ``k`` of ``share`` and the ``block_n`` columns ``n`` of column tile ``pid_n``, loaded
  along K and stored along N;
* ``_table_rows(XT, ..., g, pid_n)``: the one-row table kernel's body (``render/table.py``)
  on ``XT`` (K-stride N, N-stride 1).

Each program takes the next ticket from a counter (``CNT[0]``), so tickets follow the order
programs start in. Tickets below ``E = S x column tiles`` (``S`` shares of K per tile)
transpose share ``ticket`` and then count it done (``CNT[2]``, a release); the others run row
group ``(ticket - E) // tiles`` on column tile ``(ticket - E) % tiles`` once ``CNT[2]``
reaches ``E`` (an acquire: every row reads all of XT's columns of its tile, and one count for
all shares keeps a cache sector that straddles two tiles from being read before both are
written). A program that waits holds a ticket above every transposing one, and only a running
program takes a ticket: every share it waits for is done by a program already running, so
the wait ends whatever order the GPU starts programs in. The last program to finish
(``CNT[1]``) sets the counters back to zero for the next call. ``XT`` and the counters are
views of buffers kept per device, stream and thread (``runtime.workspace``), made per call
under CUDA-graph capture (the counters as zeros).
"""
from __future__ import annotations

from ..lower import Lowered, TableKernel
from .common import Buffer, _kernel_params, _wait_for_the_kernel_before, geom_params, \
    operand_params
from .table import BUFFERS as TABLE_BUFFERS, ROWS_JOB, _render_table_rows

#: the most columns N for which ``SparseLinear`` hands the kernel a row-major input to
#: transpose itself rather than an aten copy: the kernel saves the eager call the copy's
#: launch and allocation (~4-8 us on the H100's host) but costs GPU time that grows with N
#: (fp32, 90%, H100, triton 3.6: 768x3072 at N = 128 14-18 us eager against 22 us for copy +
#: plain kernel; at N = 1024 168 us against 65 us; 256 a wash; bench/NOTES.md, twenty-fourth
#: and twenty-fifth sessions). A direct call of the kernel on a row-major X transposes at
#: any N (reading it in place would be slower still).
MAX_N = 128
#: the transposing kernel's buffers after X: the table's, the transposed X, the counters
BUFFERS = [*TABLE_BUFFERS, "XT", "CNT"]
#: counters: the ticket, the programs done, the shares stored
COUNTERS = 3
#: elements of X a transposing program moves, per warp (its tile goes through shared
#: memory: 4 KB per warp in fp32 keeps 32 one-warp programs resident per SM)
ELEMENTS_PER_WARP = 1024


def tile_k(K: int, plan) -> int:
    """Rows of X (positions along K) per transposing program: a power of two."""
    tk = max(1, ELEMENTS_PER_WARP * plan.num_warps // plan.block_n)
    return min(tk, 1 << max(0, (K - 1).bit_length()))


def shares(K: int, plan) -> int:
    """Transposing programs per column tile."""
    return -(-K // tile_k(K, plan))


def render_transposing_kernel(b: Buffer, k: TableKernel, low: Lowered):
    p = low.plan
    BN, K = p.block_n, k.K
    if K < 1:
        raise ValueError("the transposing table kernel bakes in the weight's K: lower it with "
                         "shape=(M, K)")
    TK, S = tile_k(K, p), shares(K, p)
    b("@triton.jit")
    with b.indent("def _transpose_x_share(X, XT, sxk, sxn, N, pid_n, share):"):
        b(f'"""XT[k, n] = X[k, n] for the {TK} rows k of share and the {BN} columns n of '
          f'column tile pid_n: X loaded along K (its K-stride is 1), XT ({K} x N, contiguous) '
          'stored along N."""')
        b(f"offs_k = share * {TK} + tl.arange(0, {TK})")
        b(f"offs_n = pid_n * {BN} + tl.arange(0, {BN})")
        b(f"m = (offs_k < {K})[:, None] & (offs_n < N)[None, :]")
        b("x = tl.load(X + offs_k[:, None] * sxk + offs_n[None, :] * sxn, mask=m)")
        b("tl.store(XT + offs_k[:, None] * N + offs_n[None, :], x, mask=m)")
    b()
    _render_table_rows(b, k, low, job=True)
    ops = operand_params(low.signature)
    rows_args = ", ".join(["XT", *TABLE_BUFFERS, "Y"] + ops + ["N", "1"]
                          + geom_params(low)[2:] + ["N"])
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, BUFFERS)}):"):
        b(f'"""One launch, by ticket: tickets below {S} x column tiles transpose a share of X '
          f'into XT; the others run a row group on a column tile once every share is stored."""')
        _wait_for_the_kernel_before(b, low)
        b(f"tiles = tl.cdiv(N, {BN})")
        b(f"shares = {S} * tiles")
        b('ticket = tl.atomic_add(CNT, 1, sem="relaxed", scope="gpu")')
        with b.indent("if ticket < shares:"):
            b(f"_transpose_x_share(X, XT, sxk, sxn, N, ticket // {S}, ticket % {S})")
            b("tl.debug_barrier()   # every thread's part is stored before the share counts")
            b('tl.atomic_add(CNT + 2, 1, sem="release", scope="gpu")')
        with b.indent("else:"):
            b('ready = tl.atomic_add(CNT + 2, 0, sem="acquire", scope="gpu")')
            with b.indent("while ready < shares:   # X is being transposed"):
                b('ready = tl.atomic_add(CNT + 2, 0, sem="acquire", scope="gpu")')
            b(f"{ROWS_JOB}({rows_args}, (ticket - shares) // tiles, (ticket - shares) % tiles)")
        b("# the last program to finish sets the counters back to zero for the next call")
        b('done = tl.atomic_add(CNT + 1, 1, sem="acq_rel", scope="gpu")')
        with b.indent("if done == tl.num_programs(0) - 1:"):
            b("c = tl.arange(0, 4)")
            b(f"tl.store(CNT + c, tl.zeros_like(c), mask=c < {COUNTERS})")
    b()
