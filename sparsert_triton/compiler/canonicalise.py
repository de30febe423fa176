"""Canonicalise: fold the traced epilogue and resolve a lenient Schedule into a Plan.

``plan_for`` is the heuristic default: it needs no GPU and only the matrix statistics.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from dsl import ir
from dsl.schedule import AUTO, ROW_BLOCK_MODES, Schedule

from .compile import interpreting
from .plan import Plan, Signature
from ..weights import SparseWeight


def fold(node: ir.Node) -> ir.Node:
    """Constant-fold number-only subtrees; keep everything else as written."""
    if isinstance(node, ir.Binary):
        a, b = fold(node.a), fold(node.b)
        if isinstance(a, ir.Const) and isinstance(b, ir.Const):
            f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
                 "mul": lambda x, y: x * y}[node.op]
            return ir.Const(f(a.value, b.value))
        return ir.Binary(node.op, a, b)
    if isinstance(node, ir.Unary):
        x = fold(node.x)
        if node.op == "neg" and isinstance(x, ir.Const):
            return ir.Const(-x.value)
        return ir.Unary(node.op, x)
    if isinstance(node, ir.Clamp):
        return ir.Clamp(fold(node.x), node.lo, node.hi)
    if isinstance(node, ir.Cast):
        return ir.Cast(fold(node.x), node.dtype)
    return node


def canonicalise_program(program: ir.Program) -> ir.Program:
    for n in ir.walk(program.out):
        if isinstance(n, ir.Unary) and n.op not in ir.UNARY_OPS:
            raise ValueError(f"unknown op {n.op!r}")
        if isinstance(n, ir.Clamp) and n.lo is not None and n.hi is not None and n.lo > n.hi:
            raise ValueError(f"clamp with min {n.lo} > max {n.hi}")
    return ir.Program(program.name, program.weight, program.activation, program.operands,
                      fold(program.out))


def output_dtype(program: ir.Program, x_dtype: str) -> str:
    """The result dtype: the outermost ``.to(dtype)``, else the activations' dtype."""
    return program.out.dtype if isinstance(program.out, ir.Cast) else x_dtype


# a convolution's one-row kernel with at most this many programs (rows x column tiles) takes
# the few-programs default of plan_for (measured on the 132-SM H100)
FEW_PROGRAMS = 1024
# the same for W @ X (fp32; half precision with N <= 64), whose rows of at least FEW_MIN_ROW
# nonzeros on average qualify
FEW_PROGRAMS_MATMUL = 2048
FEW_MIN_ROW = 16


def _next_pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def _row_block_mode_plan(mode: str, s: Schedule, weight: SparseWeight, N: int, x_dtype: str,
                         interpreter: bool) -> Plan:
    if mode == "bitmap":
        return _bitmap_plan(s, weight, N, x_dtype, interpreter)
    if mode == "expand":
        return _expand_plan(s, weight, N, x_dtype)
    return _blocks_plan(s, weight, N)


def resolved_mode(schedule: Schedule, nnz: int) -> str:
    """The schedule's mode, 'auto' resolved for a weight of ``nnz`` nonzeros. Measured on an
    H100 (bench/NOTES.md): the table loop (one row per program) is within ~15% of the best
    unrolled schedule on small layers and compiles in < 1 s; unrolled code pays ~1-2 ms of
    compile per nonzero. Unroll only small matrices by default."""
    if schedule.mode != AUTO:
        return schedule.mode
    return "values" if nnz <= 2048 else "table"


def dot_works(x_dtype: str, interpreter: bool) -> bool:
    """Whether ``tl.dot`` computes in ``x_dtype`` (the dot's operands are in X's dtype):
    Triton's interpreter computes bfloat16 ``tl.dot`` wrongly (triton #11584), float64 has
    no tensor-core path here."""
    return x_dtype != "float64" and not (interpreter and x_dtype == "bfloat16")


def plan_for(schedule: Schedule, weight: SparseWeight, N: int, x_dtype: str,
             conv: bool = False, tap_masks_fit: bool = False,
             interpreter: Optional[bool] = None) -> Plan:
    """Resolve every 'auto' field from the matrix statistics and the problem size (``conv``:
    the weight is a convolution's, whose table kernel walks short per-tap segments;
    ``tap_masks_fit``: its input's spatial size is known and ``tap_masks`` serves it, see
    ``ConvGeometry.masks_fit``; ``interpreter``: the kernels run in Triton's interpreter,
    by default whether ``TRITON_INTERPRET`` is set)."""
    s = schedule
    if interpreter is None:
        interpreter = interpreting()
    avg = weight.nnz / max(1, weight.M)
    mode = resolved_mode(s, weight.nnz)
    half = x_dtype in ("float16", "bfloat16")
    if s.mode == AUTO and not conv and blocks_by_default(weight, N, x_dtype):
        mode = "bitmap" if bitmap_by_default(weight, N) else "blocks"
    elif s.mode == AUTO and not conv and expand_by_default(weight, N, x_dtype):
        mode = "expand"
    if mode in ROW_BLOCK_MODES and s.mode == AUTO:
        # a row-block mode the default picked: only where the fields the user did set fit
        # it (a row order, a chunk, streams or a prefetch it refuses keep the table kernel)
        try:
            return _row_block_mode_plan(mode, s, weight, N, x_dtype, interpreter)
        except ValueError:
            mode = "table"
    if mode in ROW_BLOCK_MODES:
        if conv:
            raise ValueError(f"schedule: {mode} mode computes W @ X only; a convolution uses "
                             "'table', 'values' or 'indices'")
        return _row_block_mode_plan(mode, s, weight, N, x_dtype, interpreter)
    use_dot = s.use_dot
    if use_dot == AUTO:
        # (tiles of >= 16, and none of the one-row kernel's switches set)
        fits = all(v == AUTO or v >= 16 for v in (s.rows_per_program, s.chunk, s.block_n)) \
            and int(s.split_k) == 1 and s.prefetch_tail is not True and s.prefetch_x is not True
        use_dot = (mode == "table" and half and fits and weight.density >= 0.15
                   and weight.dtype != "float64" and dot_works(x_dtype, interpreter))
    rpp = s.rows_per_program
    if rpp == AUTO:
        if mode == "table":
            rpp = 16 if use_dot else 1
        else:
            # about 1024 FMAs per program: each loaded X row feeds many rows (H100: 32-64 rows
            # per program beat 8-16 on a 64 x 256 layer), while keeping enough programs
            rpp = int(min(64, max(8, _next_pow2(int(1024 / max(avg, 1.0))))))
    row_kernel = mode == "table" and not use_dot   # Plan.row_kernel
    split = int(s.split_k)
    # a convolution's one-row kernel reads a zero-padded copy of X, each nonzero one offset
    # into it (one loop of unmasked loads per row), with 64-column tiles, chunks of 8 and the
    # prefetched tail: within 12% of the best of 17 schedules on the 32 fp32 DLMC 3x3 cases at
    # 90% (geomean; the tap-segment kernel, the default before: 30% off; H100,
    # bench/results/conv_h100_pad_tune.jsonl, conv_h100_split_tune.jsonl). W @ X ignores
    # conv_input (like tap_segments)
    conv_rows = conv and row_kernel
    block_n = s.block_n
    if block_n == AUTO:
        block_n = min(64 if conv_rows else 128, max(16, _next_pow2(N)))
        if use_dot:
            block_n = max(block_n, 16)
    if s.block_n == AUTO and mode != "table":
        block_n = min(block_n, 32)     # unrolled: a 32-column tile per warp
    # the one-row table kernel without the padded copy (each table entry an offset into the
    # unpadded X and its kernel tap's bit; masked loads, one loop per row): with this default
    # tile (64 columns, chunks of 8, the prefetched tail) faster than on the padded copy in
    # 17 of the 26 fp32 DLMC 3x3 cases at 90% measured both ways (-21% to +7%; the stride-2
    # projections gain most, no copy kernel, no padded copy's memory; H100,
    # bench/results/conv_h100_masks_*_tune.jsonl). With 32-column tiles and chunks of 4 it
    # loses on the 7x7 and 14x14 images (up to +44%): the tuner keeps padded candidates. The
    # default where it serves the input (kernels of up to 16 taps, entries within 32 bits)
    # and neither the padded input nor tap segments are asked for; W @ X ignores it
    # few programs (a small image at batch 1): each program's time is its row's chain of
    # dependent loads, so the X rows go a chunk ahead (prefetch_x) in chunks of 16 on the
    # padded copy. On the 16 fp32 DLMC 3x3 layers at 90% and batch 1, the layers of <= 1024
    # programs (256/512 channels, 14x14 and 7x7 outputs) ran 1.2-1.8x faster than with tap
    # masks and chunks of 8 (e.g. 13.1 vs 19.4 and 15.1 vs 25.9 us), and this form was the best
    # of 8 table schedules on all 9 (fp16/bf16: best or within 16%); from 1664 programs up
    # tap masks with chunks of 8 were up to 1.25x faster (9.3 vs 11.6 us on the 64-channel
    # layers, 11.6 vs 14.3 on the stride-2 128-channel one) or at most 8% slower (the three
    # 128-channel layers; H100, bench/results/conv_h100_b1_px_tune.jsonl,
    # conv_h100_fp16_tune.jsonl, conv_h100_bf16_tune.jsonl). Only with prefetch_x 'auto'
    chain_ok = split == 1 and s.prefetch_x == AUTO and s.prefetch_tail is not False
    programs = weight.M * math.ceil(N / block_n)
    few = conv_rows and chain_ok and programs <= FEW_PROGRAMS
    # W @ X the same way (chunks of 16, the prefetched tail, X rows a chunk ahead) in fp32
    # where the grid is small and rows are long enough to chain. H100, run 8 (the 16 ResNet-50
    # 1x1/FC shapes at batch 1, 90%; bench/results/explore_h100_run8_prefetch_x.csv): of the
    # 10 table-mode shapes with <= 2048 programs and >= 16 nonzeros per row, 8 ran 1.03-1.66x
    # faster than with chunks of 8 and 2 at most 3% slower; grids of 3200-3584 programs ran
    # 1.15-1.36x slower. Run 9 (every DLMC GEMM case at 90% whose plan this changes, 14 of
    # 38; explore_h100_run9_default_*): fp32 1.24x geomean, 12 faster (up to 1.64x: 13.0 ->
    # 7.95 us at 1000 x 2048 x 8, 25.6 -> 16.4 at 512 x 2048 x 256), 2 slower by 4-5%; at
    # 80% / 95% 1.26x / 1.22x (the 2048-program grids mixed, up to 10% slower). fp16: 0.97x
    # geomean, from 1.54x faster to 1.42x slower, all losses at N >= 196; so half precision
    # takes it only where N fits one 64-column tile: run 10 (explore_h100_run10_float16_*,
    # the 5 such cases) 1.22x / 1.23x geomean at 90% / 95%, 0.99-0.70x the time (at 80%
    # these weights are dense enough for tensor cores, use_dot, and keep that kernel)
    few_mm = (row_kernel and not conv and chain_ok and programs <= FEW_PROGRAMS_MATMUL
              and avg >= FEW_MIN_ROW and (x_dtype == "float32" or (half and N <= 64)))
    # the convolution input's form (Schedule.conv_input): tap masks and the padded copy are
    # the one-row kernel's flags; the unrolled and use_dot kernels read X itself with masked
    # loads unless padded; tap segments (below) where the one-row kernel has neither
    if s.conv_input == AUTO:
        tap_masks = conv_rows and tap_masks_fit and split == 1 and not few
        pad = conv_rows and not tap_masks
    else:
        tap_masks = conv_rows and s.conv_input == "masked"
        pad = conv and s.conv_input == "padded"
        if pad and mode == "table" and use_dot:
            raise ValueError("schedule: conv_input='padded' applies to the one-row table "
                             "kernel and the unrolled modes, not use_dot (its loads are "
                             "masked: conv_input 'masked' or 'auto')")
    chunk = s.chunk
    if chunk == AUTO:
        chunk = (16 if use_dot or (few and (pad or tap_masks)) or few_mm else
                 (8 if pad or tap_masks else 4) if conv_rows else
                 8 if mode == "table" else 4)
    row_order = s.row_order
    if row_order == AUTO:
        row_order = "nnz" if mode == "table" else "given"
    num_warps = s.num_warps
    if num_warps == AUTO:
        # H100 (bench/results/explore_h100_run4_table_warps.csv): one warp per program with
        # several columns per thread beat four warps by 1.1-1.8x in the scalar-FMA kernels (one
        # index load feeds a wider X load; more, smaller programs for the unrolled ones); a
        # split row runs one part per warp
        num_warps = split if row_kernel else 4 if use_dot else 1
    # Triton's software pipelining of the table loop (num_stages 3 won none of the 199 DLMC
    # cases the tuner timed it on, run 2); straight-line unrolled code has no loop to pipeline
    num_stages = 2 if mode == "table" else 1
    # prefetching the next chunk's columns: 1.1-1.5x on every layer of run 5
    # (bench/results/explore_h100_run5_prefetch.csv): always, in the one-row kernel
    prefetch = row_kernel
    # the prefetched tail: part of the padded convolution default above (without the padded
    # input it was slower: 0.78x at batch 8, conv_h100_pad_tune.jsonl)
    if s.prefetch_tail == AUTO:
        tail = bool(((pad or tap_masks) or few_mm) and row_kernel and prefetch and split == 1)
    else:
        tail = bool(s.prefetch_tail)
    # without the padded input, a convolution's rows walked one kernel tap at a time: 1.28x
    # (geomean, 0.71-1.55x) over the (c_in, tap) order on the 32 fp32 DLMC 3x3 cases at 90%
    # (H100, bench/results/conv_h100_before_taps.csv); that order, won by no case since the
    # padded input, is left to the split kernel's plain loads
    taps = row_kernel and not pad and not tap_masks and split == 1
    return Plan(mode=mode, rows_per_program=int(rpp), block_n=int(block_n), row_order=row_order,
                chunk=int(chunk), use_dot=bool(use_dot), allow_tf32=bool(s.allow_tf32),
                max_statements_per_function=int(s.max_statements_per_function),
                max_functions_per_kernel=functions_per_kernel(s.max_statements_per_function),
                num_warps=int(num_warps), num_stages=int(num_stages),
                prefetch=bool(prefetch), tap_segments=bool(taps),
                prefetch_tail=tail,
                # X rows one step ahead too: for few programs (above); at batch 8 slower
                # with tap masks (+1% to +26%), -7% to +8% on the padded copy
                # (H100, bench/results/conv_h100_prefetch_x_tune.jsonl)
                prefetch_x=((few and tail and bool(pad or tap_masks)) or (few_mm and tail))
                if s.prefetch_x == AUTO
                else s.prefetch_x is True,
                # X's strides as constants in the unrolled code (one immediate offset per
                # load: 4,384 -> 2,856 SASS instructions, 80 -> 56 registers on a 64 x 256
                # layer; bench/NOTES.md, "Code size"); a table kernel's loads are few
                bake_strides=mode != "table",
                pad_input=bool(pad), split_k=split,
                streams=(8 if mode != "table" else 1) if s.streams == AUTO else int(s.streams),
                pdl=False,   # resolved per device: see with_device
                tap_masks=tap_masks)


def functions_per_kernel(max_statements: int) -> int:
    """How many of the unrolled code's functions one kernel holds (a variant of more is cut
    into several kernels, compiled in parallel and launched side by side, ``streams``): 16
    for functions of up to the default 2048 statements, 8 for larger ones (whole row
    groups), so a kernel stays a bounded compile unit. These are the bounds of every measured
    unrolled schedule: the defaults, and the tuner's 16-warp convolution candidates (16384
    statements, 8 functions; the fastest on the 64/128-channel layers at batch 8, seventh
    session). The one other bound timed on them (any number of functions per kernel) ran the
    128-channel layer's eight 16-row groups in one kernel at 24.7 us against 26.7 in two
    (separate runs, ``conv_h100_one_kernel_tune.jsonl``, ``conv_h100_ctas2_tune.jsonl``),
    where 32-row groups won (25.3): no measured case needed a user to set it."""
    return 16 if max_statements <= 2048 else 8


#: Half-precision W @ X with at most this many columns defaults to the blocks mode
BLOCKS_MAX_N = 64


def blocks_by_default(weight: SparseWeight, N: int, x_dtype: str) -> bool:
    """Whether 'auto' picks a row-block mode (the blocks mode, or the bitmap mode where
    :func:`bitmap_by_default` says): half-precision W @ X of at most 64 columns.
    H100 / H200, Llama-2-7B shapes, fp16, uniform masks (bench/NOTES.md, twelfth and
    thirteenth sessions): at N = 1 it ran 0.9x / 1.4x / 3.0-3.3x of dense cuBLAS at 50% /
    70% / 90% sparsity (H100), at N = 16 0.34x / 0.52x / 1.03-1.16x, at N = 64 and 90%
    0.37-0.45x; the table kernel's default ran 0.05-0.12x at N = 16-64 and 50-70% (H200) and
    0.24-0.58x in the issue's H100 measurements. Losing to dense is left to
    ``sparsify(only_if_faster=True)`` (``estimate.py``). Larger weights only (more than 2048
    nonzeros; small ones unroll)."""
    if x_dtype not in ("float16", "bfloat16") or weight.nnz <= 2048:
        return False
    return N <= BLOCKS_MAX_N


def expand_by_default(weight: SparseWeight, N: int, x_dtype: str) -> bool:
    """Whether 'auto' picks the expand mode: half-precision W @ X of more columns than the
    blocks modes take, on weights of at least 2**18 positions, where the density times N is at
    least 12. H100, fp16 and bf16, Llama-2-7B shapes (bench/NOTES.md, seventeenth session): the
    expansion takes 23 us for 4096 x 4096 and 65 us for 11008 x 4096 (whatever the
    density), so the mode costs about that plus a dense product on tensor cores; the table
    kernel's time grows with the nonzeros times N (~1.1-1.7e-13 s per multiply-add). At 50-70%
    the expand mode ran 0.27-0.76x of dense cuBLAS at N = 128-2048 against the table kernel's
    0.06-0.15x. At density x N = 12.8 (90%, N = 128; nineteenth session, with
    :func:`expand_tiles`) the two kernels tie within 0-16% (4096 x 4096: 42.7 against
    41.1 us; six encoder shapes from 512 x 512 to 3072 x 768), and the table kernel needs a
    row-major input (an ``nn.Linear``'s) transposed first, which the expand mode reads in
    place: BERT-base fp16 at 90%, 128 tokens, every layer expand against the table default:
    1.37 against 1.68 ms under a CUDA graph, 4.9 against 6.1 ms eagerly. At 95% (6.4) the
    table kernel is up to twice as fast; at N = 1024 the expand mode 1.5-3x (90%). Smaller
    weights were not measured: they keep the table kernel."""
    return (x_dtype in ("float16", "bfloat16") and N > BLOCKS_MAX_N
            and weight.M * weight.K >= 1 << 18 and weight.density * N >= 12)


#: the expand mode's product tiles (rows, columns, warps) that :func:`expand_tiles` picks from
EXPAND_TILES = ((128, 256, 8), (64, 128, 4), (64, 64, 4))


def expand_tiles(M: int, K: int, N: int) -> tuple:
    """The expand mode's default product tile ``(rows, columns, warps)``: 128 x 256 with 8 warps
    from N = 1024 where that makes >= 96 programs, else 64 x 128 with 4 warps where that
    makes >= 96 programs (at N < 1024 on weights of >= 2**22 positions whatever the count),
    else 64 x 64 (fewer columns below N = 128). H100, fp16, 90% (bench/NOTES.md,
    nineteenth session): at N = 1024 128 x 256 ran 12.7 / 35.0 / 10.1 / 23.9 us on 768 x 768,
    768 x 3072, 512 x 512, 512 x 2048 (24, 24, 16, 16 programs) against 6.9 / 15.5 us for
    64 x 128 and 4.5 / 8.9 us for 64 x 64; where it makes 96-128 programs (3072 x 768,
    4096 x 4096) it was fastest; at N = 128 64 x 64 was 7-14% faster than 64 x 128 on the six
    encoder shapes and 7% slower on 4096 x 4096."""
    def programs(r, c):
        return -(-M // r) * -(-N // c)
    if N >= 1024 and programs(128, 256) >= 96:
        return 128, 256, 8
    if (N < 1024 and M * K >= 1 << 22) or programs(64, 128) >= 96:
        return 64, max(16, min(128, _next_pow2(N))), 4
    return 64, max(16, min(64, _next_pow2(N))), 4


def bitmap_by_default(weight: SparseWeight, N: int) -> bool:
    """Whether 'auto' takes the bitmap mode where it would take the blocks mode
    (:func:`blocks_by_default`): from 16 columns at >= 15% density, and above 16 columns at
    any density. H100, fp16, 11008 x 4096, uniform masks (bench/NOTES.md, fifteenth
    session): at N = 16 the bitmap mode ran 66 / 51 / 46 us against the blocks mode's 158 /
    103 / 43 us at 50 / 70 / 90% sparsity (the blocks mode's time grows with the nonzeros
    times the columns, the bitmap mode's with the positions: they cross near 12% density), at
    N = 64 97-122 us against 158-641 us; at N = 1 and 4 the blocks mode is faster at every
    density (12-67 us against 39-90). Neither beats dense cuBLAS (34 us) at N >= 16 below 90%
    (``sparsify(only_if_faster=True)`` keeps those layers dense)."""
    return N > 16 or (N == 16 and weight.density >= 0.15)


def blocks_shape(weight: SparseWeight, N: int) -> tuple:
    """The blocks mode's default ``(rows_per_program, chunk)``: rows of a block x nonzeros per
    row and step. H100, fp16, Llama-2-7B shapes at 50-90% (bench/NOTES.md, "Thirteenth
    session" and "Eighteenth session"): at N = 1, 256-nonzero steps of 2 rows (the 512
    entries a step of 4 x 128 in twice the programs, which fill the GPU where a 4096-row
    weight's 1024 blocks of 4 rows did not; against 4 x 128 / 16 x 64 / 4 x 64 faster on 11
    of 12 cases of four Llama shapes, 1.3x geomean, 0.97x at worst); for N = 2-4, 128-nonzero
    steps of 4 rows where rows hold >= 512 nonzeros (less padding per row than 8 x 64
    blocks on 4096 x 11008: 3.0x vs 2.0x of dense at 90%), else 64-nonzero steps of 16 rows
    where that leaves >= 640 blocks (11008 x 4096 at 90%: 3.3x vs 3.0x for 8 x 64), of 4
    rows otherwise (no K slices needed; 2 x 256 was not faster at N = 4); 2 x 64 up to
    N = 16 (1.03-1.16x at 90%, where 4 x 32 ran 0.76-0.80x); 8 x 16 above."""
    if N > 16:
        return 8, 16
    if N > 4:
        return 2, 64
    if N == 1:
        return 2, 256
    if weight.nnz >= 512 * weight.M:
        return 4, 128
    return (16 if weight.M >= 16 * 640 else 4), 64


def _blocks_plan(s: Schedule, weight: SparseWeight, N: int) -> Plan:
    """The blocks mode's plan: rows and nonzeros per step from :func:`blocks_shape`; rows in
    the given order unless sorting them stores >= 10% fewer entries
    (``blocks.default_row_order``); the column tile covers N up to 64; ``split_k`` 1 (the default) cuts each block's steps over
    enough programs for ~4 per SM (``blocks.auto_split``)."""
    from .blocks import auto_split, default_row_order
    R, U = blocks_shape(weight, N)
    rpp = R if s.rows_per_program == AUTO else int(s.rows_per_program)
    chunk = U if s.chunk == AUTO else int(s.chunk)
    block_n = min(64, _next_pow2(N)) if s.block_n == AUTO else int(s.block_n)
    split = int(s.split_k)
    if split == 1:
        blocks = -(-weight.M // rpp)
        longest = int(weight.row_nnz.max()) if weight.M else 0
        split = auto_split(blocks, -(-N // block_n), -(-longest // chunk))
    order = default_row_order(weight, rpp, chunk) if s.row_order == AUTO else s.row_order
    return _row_block_plan(s, "blocks", rpp, block_n, order, chunk, False, split,
                           ("use_dot", "prefetch_tail", "prefetch_x"))


def _row_block_plan(s: Schedule, mode: str, rpp: int, block_n: int, order: str, chunk: int,
                    use_dot: bool, split: int, refused, num_warps: int = None,
                    num_stages: int = 2) -> Plan:
    """The plan of a row-block mode (blocks, bitmap, expand) from its resolved shape; the
    fields it shares with the Schedule as given. ``refused``: switches that must not be True
    in it; ``num_warps`` (default 4) and ``num_stages``: the mode's own where the schedule
    leaves warps 'auto'."""
    for name in refused:
        if getattr(s, name) is True:     # Schedule holds these as True, False or 'auto'
            raise ValueError(f"schedule: {name}=True does not apply to {mode} mode")
    return Plan(mode=mode, rows_per_program=rpp, block_n=block_n, row_order=order,
                chunk=chunk, use_dot=bool(use_dot), allow_tf32=bool(s.allow_tf32),
                max_statements_per_function=int(s.max_statements_per_function),
                max_functions_per_kernel=functions_per_kernel(s.max_statements_per_function),
                num_warps=(num_warps or 4) if s.num_warps == AUTO else int(s.num_warps),
                num_stages=num_stages,
                split_k=split, streams=1 if s.streams == AUTO else int(s.streams))


def _expand_plan(s: Schedule, weight: SparseWeight, N: int, x_dtype: str) -> Plan:
    """The expand mode's plan: 64-position K tiles; output tiles from :func:`expand_tiles`;
    the product pipelined over 4 stages (3 for N = 256-1023); the product on tensor cores in X's dtype (half precision, or float32 with
    ``allow_tf32``). H100, fp16, Llama-2-7B shapes at 50% (bench/NOTES.md, seventeenth session):
    at N = 2048 128 x 256 / 8 warps / 4 stages ran 0.68-0.76x of dense cuBLAS against
    0.49-0.55x for 64 x 128 / 4 warps / 2 stages (128 x 128 with 8 warps: 0.61-0.69x); at
    N = 128 64 x 128 with 4 stages 0.27-0.32x against 0.18-0.25x with 2; at N = 256-512 3
    stages beat 4 on 11008 x 4096 by 10-13% and lost by 10-12% on 4096 x 4096."""
    if not (x_dtype in ("float16", "bfloat16") or (x_dtype == "float32" and s.allow_tf32)):
        raise ValueError(f"schedule: expand mode multiplies on tensor cores: X must be float16 "
                         f"or bfloat16 (float32 with allow_tf32=True), got {x_dtype}")
    if s.use_dot is False:
        raise ValueError("schedule: expand mode multiplies with tl.dot: use_dot=False does "
                         "not apply")
    rows, cols, nw = expand_tiles(weight.M, weight.K, N)
    rpp = rows if s.rows_per_program == AUTO else int(s.rows_per_program)
    chunk = 64 if s.chunk == AUTO else int(s.chunk)
    block_n = cols if s.block_n == AUTO else int(s.block_n)
    warps = nw if s.num_warps == AUTO else int(s.num_warps)
    stages = 3 if 256 <= N < 1024 else 4
    order = "given" if s.row_order == AUTO else s.row_order
    return _row_block_plan(s, "expand", rpp, block_n, order, chunk, True, int(s.split_k),
                           ("prefetch_tail", "prefetch_x"), num_warps=warps, num_stages=stages)


def _bitmap_plan(s: Schedule, weight: SparseWeight, N: int, x_dtype: str,
                 interpreter: bool) -> Plan:
    """The bitmap mode's plan: ``tl.dot`` of the decoded tile (a column tile of >= 16, X's
    columns past N masked) from N = 2 where ``tl.dot`` computes in X's dtype (half precision;
    float32 only with ``allow_tf32``), else multiply-adds (sm_90 code: 15.4 instructions per
    weight position with ``tl.dot`` at any N <= 16, against 13.9 with multiply-adds at N = 1,
    17.8 at N = 2 and 29.8 at N = 4); ``split_k`` 1 (the default) cuts each row block's
    tiles over enough programs for ~4 per SM. Tile shapes (bench/NOTES.md, fourteenth and
    fifteenth sessions; H100, fp16, 11008 x 4096 at 50 / 70 / 90%): with ``tl.dot``, 64 x 128
    tiles up to 32 columns (at N = 16 128 x 128 with 8 warps ran within 3%, 32 x 256 10-18%
    slower), 32 x 64 at 64 columns (97-122 us against 114-139 for 16 x 128; 64 x 128 spills
    there); with multiply-adds, 256 positions and rows x columns <= 16, 8 rows at N = 1
    (39-55 us against 46-65 for 16 rows and 50-68 for 32)."""
    from .blocks import auto_split
    use_dot = s.use_dot
    bn_auto = min(64, _next_pow2(N))
    if use_dot == AUTO:
        fits = all(v == AUTO or v >= 16 for v in (s.rows_per_program, s.block_n))
        dtype_ok = x_dtype in ("float16", "bfloat16") or (x_dtype == "float32" and s.allow_tf32)
        use_dot = (N >= 2 and fits and dtype_ok and weight.dtype != "float64"
                   and dot_works(x_dtype, interpreter))
    if s.block_n != AUTO:
        block_n = int(s.block_n)
    elif use_dot:
        block_n = max(16, bn_auto)
    else:
        block_n = min(bn_auto, 8)
    if use_dot:
        rpp_auto, chunk_auto = (64, 128) if block_n <= 32 else (32, 64)
    else:
        rpp_auto, chunk_auto = max(1, min(8, 16 // block_n)), 256
    rpp = rpp_auto if s.rows_per_program == AUTO else int(s.rows_per_program)
    chunk = chunk_auto if s.chunk == AUTO else int(s.chunk)
    if s.block_n == AUTO and not use_dot:   # the accumulator: rows x chunk x block_n <= 16384
        block_n = max(1, min(block_n, 16384 // max(1, rpp * chunk)))
    split = int(s.split_k)
    k_tiles = max(1, -(-weight.K // chunk))
    if split == 1:
        split = auto_split(-(-weight.M // rpp), -(-N // block_n), k_tiles)
    order = "given" if s.row_order == AUTO else s.row_order
    return _row_block_plan(s, "bitmap", rpp, block_n, order, chunk, use_dot, split,
                           ("prefetch_tail", "prefetch_x"))


def with_device(plan: Plan, capability: str) -> Plan:
    """The plan for one device (``capability``: ``"sm_90"``..., or ``"interpreter"``):
    programmatic dependent launch (``pdl``) on compute capability 9.0 and newer, where each
    kernel of a call (and the padded copy) may start while the one before it finishes and
    waits for it before touching memory (H100: faster in all 10 pairs measured, 1-11%, sixth
    session, ``conv_h100_pdl_onoff_tune.jsonl``); off elsewhere (the interpreter cannot run
    it)."""
    hopper = capability.startswith("sm_") and int(capability[3:]) >= 90
    return replace(plan, pdl=hopper) if plan.pdl != hopper else plan


def check_call(plan: Plan, sig: Signature, interpreter: Optional[bool] = None):
    """Refuse a plan that cannot compute a call's dtypes (a clear error instead of a wrong
    result): ``use_dot`` with float64, or with bfloat16 X where the kernels run in Triton's
    interpreter (``interpreter``, by default whether ``TRITON_INTERPRET`` is set; building a
    variant on the CPU to read or AOT-compile its source is not running it)."""
    if interpreter is None:
        interpreter = interpreting()
    if plan.use_dot and sig.acc_dtype == "float64":
        raise ValueError("schedule: use_dot does not support float64 inputs")
    # (the expand mode's product takes float32 operands in the interpreter)
    if plan.use_dot and plan.mode != "expand" and not dot_works(sig.x_dtype, interpreter):
        raise ValueError(f"schedule: use_dot with {sig.x_dtype} X is not supported in Triton's "
                         "interpreter (TRITON_INTERPRET=1 computes bfloat16 tl.dot wrongly, "
                         "triton #11584): use use_dot=False, or run on a GPU")
