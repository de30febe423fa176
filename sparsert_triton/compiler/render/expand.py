"""Render the ``expand`` kernels (layout: ``compiler/bitmap.py``): for many columns, the weight
is written out as dense tiles once per call, then multiplied on tensor cores.

1. ``sparse_expand_kernel``, program (row block ``b``, share ``j``): decodes the K tiles
   ``j, j + G, j + 2 G, ...`` of block ``b`` (``G = bitmap.expansion_programs``, independent
   of N; a bit test and a ``popc`` per position, as the bitmap kernel does) and stores them,
   zeros included, into the scratch ``SCR`` (row block rows x whole K tiles, X's dtype).
   Every tile is decoded once per call, whatever N.
2. ``sparse_dense_kernel``, program (``b``, ``j``): ``acc = sum_kt tl.dot(SCR[b, kt], X[kt, j])``
   in the accumulator dtype, then the epilogue. It waits for the expansion (programmatic
   dependent launch, or stream order).

The scratch is a view of a buffer kept per device, stream and thread (``runtime.workspace``),
allocated per call under CUDA-graph capture."""
from __future__ import annotations

from ..bitmap import expansion_programs
from .bitmap import _decode, _x_tile
from .blocks import program_start
from .common import TL_DTYPES, Buffer, _kernel_params, _store_tile, operand_params

BUFFERS = ["BITS", "WOFF", "ROFF", "TBASE", "VALS", "SCR"]


def buffers() -> list:
    """The kernels' buffers after X, in launch order (``runtime.launch.run``)."""
    return list(BUFFERS)


def _scratch_tile(low) -> str:
    """Pointers of this program's (rows x T) tile ``kt`` of the scratch."""
    R, T = low.plan.rows_per_program, low.plan.chunk
    kp = low.kernels[0].k_tiles * T
    return (f"SCR + (pid_m * {R} + i)[:, None].to(tl.int64) * {kp} + kt * {T} "
            f"+ tl.arange(0, {T})[None, :]")


def render_expand_kernel(b: Buffer, k, low):
    p = low.plan
    R, T = p.rows_per_program, p.chunk
    W = T // 32
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, buffers())}):"):
        b(f'"""SCR[rows, k] = W[rows, k] for the {k.k_tiles} K tiles of {T} positions of a '
          f"block of {R} rows (this program's share): decoded from a bit per "
          "position and the tile's packed values, VALS[TBASE + ROFF[r] + WOFF[r, w] + "
          'popc(BITS[r, w] & (2**j - 1))], zero where the bit is clear."""')
        program_start(b, low, 1)
        b(f"i = tl.arange(0, {R})")
        b(f"iw = i[:, None] * {W} + tl.arange(0, {W})[None, :]")
        b("lane = tl.arange(0, 32)")
        b("bit = (tl.full([32], 1, tl.int32) << lane)[None, None, :]")
        b("below = bit - 1")
        G = expansion_programs(-(-k.M // R), k.k_tiles)
        with b.indent(f"for kt in range(pid_n, {k.k_tiles}, {G}):"):
            _decode(b, low)
            b(f"tl.store({_scratch_tile(low)}, "
              f"tl.reshape(v, [{R}, {T}]).to({TL_DTYPES[low.signature.x_dtype]}))")
    b()


def render_dense_kernel(b: Buffer, k, low):
    p, sig = low.plan, low.signature
    R, T, BN = p.rows_per_program, p.chunk, p.block_n
    ops = operand_params(sig)
    b("@triton.jit")
    with b.indent(f"def {k.name}({_kernel_params(low, buffers())}):"):
        b(f'"""acc[r, n] = sum_k SCR[r, k] * X[k, n] over a block of {R} rows and a column '
          f"tile of {BN}, {k.k_tiles} K tiles of {T} on tensor cores (the expansion kernel "
          'wrote SCR), then the epilogue."""')
        program_start(b, low, 1)
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
        _store_tile(b, low, ops)
    b()
