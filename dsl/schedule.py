"""The user-facing schedule: *how* ``W @ X`` is computed.

A :class:`Schedule` is lenient where it is safe: most fields may be left at ``"auto"``, an
integer may be written as a string (``"64"``) or an integral float, and ``as_schedule``
takes a mode name or a dict of fields for a whole schedule; a value that is not what a field
holds (``block_n=64.9``, ``rows_per_program=True``, ``allow_tf32="x"``) is an error naming
the field. ``sparsert_triton.compiler.canonicalise.plan_for`` turns it, with the matrix and the
problem size, into a frozen, validated ``Plan``. ``repr(schedule)`` is valid DSL code that
rebuilds the same schedule.

Fields
------
mode
    What the generated code bakes in. ``"values"``: column indices and weight values are
    literals (SparseRT). ``"indices"``: column indices are literals, values are read from a
    packed buffer (new weights with the same mask reuse the compiled kernel). ``"table"``:
    nothing per nonzero is unrolled; the kernel loops over host-built index/value buffers,
    so code size and compile time do not depend on nnz. ``"blocks"`` (W @ X only): rows in
    blocks of ``rows_per_program``, each row's nonzeros padded to its block's longest row and
    walked ``chunk`` at a time, 16-bit column indices (4 bytes per fp16 nonzero), each block's
    steps cut over ``split_k`` programs (``split_k`` 1, the default, lets the plan choose:
    ~4 programs per SM); the default for half-precision W @ X of N < 16 columns, and N = 16
    at < 15% density (``canonicalise.blocks_by_default``). ``"bitmap"`` (W @ X only): the
    weight in tiles of ``rows_per_program`` x ``chunk`` positions, a bit per position plus
    the tile's packed values (2d + 1/8 bytes per fp16 position at density d), decoded in
    registers (bit test, ``popc``, stored offsets) and multiplied with ``tl.dot`` (from 2
    columns in half precision) or multiply-adds, each row block's K tiles cut over
    ``split_k`` programs like the blocks mode's steps; the default for half-precision W @ X of
    16 < N <= 64, and N = 16 at >= 15% density (``canonicalise.bitmap_by_default``: 2-5x
    faster than the blocks mode there on an H100, still below dense cuBLAS fp16). ``"expand"``
    (W @ X only): the bitmap layout written out as dense ``rows_per_program`` x ``chunk``
    tiles into a per-call scratch (each tile decoded once, whatever N), then a ``tl.dot``
    product with the fused epilogue (half precision, or float32 with ``allow_tf32``); the
    default for half-precision W @ X above 64 columns on weights of >= 2**22 positions where
    density x N >= 20 (``canonicalise.expand_by_default``: 0.3-0.75x of dense cuBLAS at
    N = 128-2048 on an H100, 1.4-8x faster than the table kernel there). Every mode
    is picked somewhere: the DLMC suite's tuned winners (H100, ``dlmc_h100.csv``) are the
    table kernel in 268 of 312 cases (25 of them ``use_dot``), ``values`` in 44; blocks:
    2.4-2.9x over dense cuBLAS at N = 1, 90% (Llama-2-7B MLP shapes, twelfth session);
    ``indices`` keeps the compiled kernel for new values (``k.with_values``).
rows_per_program
    Output rows computed by one program. In the unrolled modes each needed row of ``X`` is
    loaded once per program and feeds every row of the group that uses it (the tuner's 16-
    and 32-row groups won the 64/128-channel convolutions at batch 8; the table kernel runs
    one row: 4-64 rows were 1.2-20x slower, second session).
block_n
    Columns of ``X``/``Y`` per program (a power of two). Searched by the tuner (16-512; the
    convolution table kernel's 32-, 64- and 128-column forms each won DLMC cases, fourth
    session).
row_order
    ``"given"`` (matrix order), ``"nnz"`` (rows sorted by nonzero count, so that a group holds
    rows of similar length), ``"cluster"`` (greedy grouping of rows that share columns, to
    maximise reuse of loaded ``X`` rows; 14-15% fewer loads in the 16-warp unrolled code,
    eighth session). The tuned DLMC winners: ``nnz`` in all 268 table cases, ``given`` in
    the 44 unrolled ones; ``cluster`` groups the tuner's tensor-core and unrolled
    candidates.
chunk
    Table mode: nonzero columns handled per loop step (the static unroll). Default: 16 with
    ``use_dot`` and in the few-programs defaults (see ``prefetch_x``), 4 in a convolution's
    tap-segment kernel, 8 otherwise (chunk 8 over 4: 1.18-1.46x on the prefetched table kernel, run 5;
    4 with 32-column tiles won convolutions at batch 1, fourth session).
use_dot
    Table mode: multiply each (rows_per_program x chunk) block of W with ``tl.dot`` (tensor
    cores; needs rows_per_program, chunk, block_n >= 16). Float32 inputs use exact ("ieee")
    precision unless ``allow_tf32`` is set. Default on for half precision at >= 15%
    density (the tuned winner of 25 of the 312 DLMC cases).
allow_tf32
    Let float32 ``tl.dot`` use TF32 (faster, ~1e-3 relative error): a numerics choice the
    user makes (off by default), not a tuning knob.
max_statements_per_function
    Compile-unit bound of the unrolled modes: a row group is split into ``noinline``
    functions of at most this many statements (one X load per distinct column, one FMA per
    nonzero, one store per row), and the groups into kernels of at most 16 such functions
    (compiled in parallel; 8 where a function may hold more than the default 2048
    statements). Compile time grows linearly in nnz. Default 2048 (a few rows per function:
    2.2x faster than the table kernel on the 64-channel 3x3 layers at batch 8, fourth
    session); the tuner's 16-warp convolution candidates take 16384, a whole 32- or 16-row
    group per function, so each loaded X vector feeds every row of the group that uses it:
    the fastest schedule of the 64/128-channel layers at batch 8 (H100: 128 channels 25.3
    us against 29.4 for four warps and 45-48 us for the padded table kernel; seventh
    session, ``conv_h100_ctas*_tune.jsonl``).
split_k
    Table mode, one row at a time: each row's nonzeros cut into ``split_k`` contiguous parts
    walked side by side (a ``(split_k x block_n)`` tile, one part per warp with the default
    ``num_warps = split_k``), summed once per row before the epilogue. Shorter dependent load
    chains and more warps per SM (one-warp programs fill at most half of an H100 SM's warp
    slots). 1 (the default) walks each row in one part. Convolutions take it on the padded
    input (``conv_input``, a row is one segment there). Searched by the tuner where few
    programs leave SMs idle
    (H100: 1.29x / 1.08x over the one-row default at N = 49 / 196, explore run 6; 4 parts
    for the 512-channel convolutions at batch 1). Blocks and bitmap modes: see ``mode``.
prefetch_tail
    In the one-row table kernel, whose loop loads the next chunk's columns and values one
    step ahead (``prefetch``, set by the plan): a row's (or a kernel tap's) last
    ``len % chunk`` nonzeros use the columns and values the pipelined loop already loaded, as up to ``chunk - 1`` independent
    loads of X masked by a scalar "still in the segment" test, instead of a loop whose every
    step waits for its column before loading X. Default: on in a convolution's one-row kernel
    on the padded or masked input (``conv_input``; part of the measured convolution default;
    on tap segments it was slower) and in fp32 W @ X's few-programs default (see
    ``prefetch_x``), off elsewhere. A W @ X candidate of the tuner on its own: the best of
    5 table schedules on 4 of the 16 ResNet-50 1x1/FC shapes at batch 1 (H100, 2.5-4% over the default, grids of
    1792-3584 programs; explore run 8, ``explore_h100_run8_prefetch_x.csv``).
prefetch_x
    With ``prefetch_tail``: load the next chunk's X rows one loop step ahead too (the columns
    and values two steps ahead), so a step's FMAs consume loads issued a step earlier and a
    row's chain of dependent X loads (one memory latency per chunk, from DRAM for an input
    that is not in L2) is half as long. Twice the X registers; each prefetched load masked
    by "still in the segment" (the tail's loads come from the loop). Default: on, with chunks
    of 16 and the padded input (``conv_input``), in a convolution's one-row table kernel of
    few programs (rows x column tiles <= ``canonicalise.FEW_PROGRAMS``, 1024: small images
    at batch 1), off elsewhere (H100, DLMC 3x3 layers at 90%, batch 1: 1.2-1.8x over tap masks on the 9 layers of <= 1024
    programs; at batch 8 slower with tap masks, within 8% on the padded copy). For fp32
    W @ X: on, with chunks of 16 and ``prefetch_tail``, in the one-row table kernel of at
    most ``canonicalise.FEW_PROGRAMS_MATMUL`` (2048) programs whose rows hold at least
    ``FEW_MIN_ROW`` (16) nonzeros on average (H100, the 14 DLMC GEMM cases at 90% this
    changes: 1.24x geomean, 12 up to 1.64x faster, 2 slower by 4-5%). Half precision takes
    it only with N <= 64 (fp16 1.22x geomean on those cases; mixed above, 0.65-1.42x).
conv_input
    How a convolution reads its input X; three forms of one choice. Ignored by ``W @ X``.
    ``"padded"``: the one-row table kernel and the unrolled modes read a copy of X made once
    per call, zero-padded by the convolution's padding (one copy kernel; none for padding 0
    and a contiguous X), so that every nonzero ``(c_in, dy, dx)`` reads it at one constant
    offset ``c_in*Hp*Wp + dy*dh*Wp + dx*dw`` without an in-image mask: in the table (each
    row's nonzeros one loop of unmasked loads) or in the unrolled code (an unmasked load at
    an immediate offset). Not for the ``use_dot`` kernel. ``"masked"``: X itself (contiguous
    NCHW; another layout is copied to it); in the one-row table kernel each nonzero's table
    entry holds its offset into X and its kernel tap, each lane's in-image bit per tap is set
    once per column tile and masks the load (tap masks: one loop of loads per row, as on the
    padded copy, without the copy; sm_90 SASS: 116 instructions per 8 nonzeros against 80,
    the loads the same; kernels of up to 16 taps); the unrolled modes and the ``use_dot``
    kernel mask each load by its in-image test. ``"segments"``: X itself, the one-row table
    kernel walking each row one kernel tap at a time, each tap's loads masked by its
    in-image test (``split_k`` > 1: the row's (c_in, tap) order, plain masked loads); the
    other kernels as with ``"masked"``. A padded or masked kernel is specialised to the
    input's spatial size. Default ('auto'): in the one-row table kernel ``"masked"`` where
    tap masks serve the kernel and input (up to 16 taps; one image's entries within 32 bits),
    ``split_k`` is 1 and the grid is not one of few programs (see ``prefetch_x``), else
    ``"padded"`` (H100, fp32 DLMC 3x3 layers at 90%: masked faster in 17 of 26 cases, -21%
    to +7%; with 32-column tiles and chunks of 4 slower on 7x7 and 14x14 images); X itself
    with masked loads in the unrolled modes and the ``use_dot`` kernel. The tuner's unrolled
    convolution candidates read the padded copy: the 16-warp forms on it won the
    64/128-channel layers at batch 8 (seventh session). ``"segments"`` is the one-row
    kernel's default before the padded input (1.28x over the (c_in, tap) order; won no case
    since). Saved schedules' ``pad_input`` / ``tap_masks`` switches are read as this field
    (``LEGACY_CONV_INPUT``).
streams
    Unrolled modes cut into several kernels (``max_statements_per_function``): run up to this
    many of them side by side on CUDA streams forked from the caller's stream and joined back
    to it before the call returns (CUDA-graph safe); each kernel holds a few row groups, i.e.
    too few programs to fill the GPU alone. 1 launches them in sequence. Default: 8 for the
    unrolled modes (H100: 1.9-5.2x faster on the GPU than in sequence on DLMC ResNet-50 3x3
    layers and a 16-kernel matmul, ``bench/results/conv_h100_unrolled_streams_tune.jsonl``,
    ``streams_latency_h100.txt``). 1 is the user's choice for eager calls: side by side
    costs ~30 us more host time per kernel (a 16-kernel variant: 1072 us of host time per
    call against 580 in sequence, fifth session). A table variant is one kernel. The result
    does not depend on it.
num_warps
    Passed to Triton. Default: one warp per program for the scalar-FMA kernels (H100, run 4:
    one warp with several columns per thread beat four by 1.1-1.8x), ``split_k`` warps for
    a split row, 4 for ``use_dot`` and the blocks mode; the 16-warp unrolled convolution
    candidates of the tuner won the 64/128-channel layers at batch 8 (seventh session).

The plan also sets, without a Schedule field (no measured case needed a user to change
them; bench/NOTES.md, "Schedule fields removed"): ``prefetch`` (the one-row table kernel
loads the next chunk's columns and values a loop step ahead: 1.1-1.5x on every layer of
explore run 5), ``tap_segments`` (that kernel walks a convolution's row one kernel tap at a
time for ``conv_input="segments"``: 1.28x over the (c_in, tap) order),
``bake_strides`` (the unrolled modes write X's strides into the code), ``pdl``
(programmatic dependent launch on compute capability 9.0+), ``num_stages`` (2 for the
table and blocks loops, 1 for unrolled code) and ``max_functions_per_kernel`` (see
``max_statements_per_function``).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Union

AUTO = "auto"
#: Fields of earlier versions that no default or tuner candidate chose (bench/NOTES.md,
#: "Schedule fields removed"), with the values a dict of fields (a saved schedule) may still
#: hold: those that ask for what the code does now (a removed path's "off" or "auto"); they
#: are ignored. Any other value is an error naming the field
REMOVED_FIELDS = {"parallel_rows": (1,), "column_programs": (0,),
                  "tap_pointers": (AUTO, False), "pack_nonzeros": (AUTO, False),
                  # derived by the plan now: whatever a saved schedule held is ignored
                  "bake_strides": (AUTO, True, False), "pdl": (AUTO, True, False),
                  "prefetch": (AUTO, True, False), "tap_segments": (AUTO, True, False),
                  "max_functions_per_kernel": (AUTO,) + tuple(range(1, 1025)),
                  "num_stages": (AUTO,) + tuple(range(1, 9))}
MODES = ("values", "indices", "table", "blocks", "bitmap", "expand")
#: the modes of one program per (row block, column tile, K slice), W @ X only
ROW_BLOCK_MODES = ("blocks", "bitmap", "expand")
ROW_ORDERS = ("given", "nnz", "cluster")

IntOrAuto = Union[int, str]
INT_FIELDS = ("rows_per_program", "block_n", "chunk", "num_warps",
              "max_statements_per_function", "split_k", "streams")
#: Fields that apply to convolutions only (``W @ X`` ignores them): a matrix product's
#: schedule, as :meth:`Schedule.for_kind` shows it, leaves them out
CONV_FIELDS = ("conv_input",)
BOOL_FIELDS = ("allow_tf32", "prefetch_tail", "prefetch_x", "use_dot")
#: The forms of a convolution's input (``Schedule.conv_input``)
CONV_INPUTS = ("padded", "masked", "segments")
#: Saved schedules of earlier versions chose the input with two switches, ``pad_input`` and
#: ``tap_masks`` (True, False or 'auto'); each pair that resolved to one form, as
#: ``(pad_input, tap_masks) -> conv_input``. Any other pair (both True: two forms at once;
#: pad_input 'auto' with tap_masks False: padded in the table kernel, X itself in the
#: unrolled modes, no one form) is an error naming both fields
LEGACY_CONV_INPUT = {(AUTO, AUTO): AUTO,
                     (True, AUTO): "padded", (True, False): "padded",
                     (AUTO, True): "masked", (False, True): "masked",
                     (False, AUTO): "segments", (False, False): "segments"}


def _is_bool(v) -> bool:
    """A Python or numpy bool."""
    return isinstance(v, bool) or (type(v).__module__ == "numpy"
                                   and type(v).__name__ in ("bool", "bool_"))


def _as_int(name: str, v, auto: bool = True):
    """An integer field: an int (or numpy integer), a float with an integral value or a
    string of digits; 'auto' where the field has a heuristic. Anything else (64.9, True, 'x')
    is an error naming the field."""
    if auto and v == AUTO:
        return AUTO
    if _is_bool(v):
        ok = False
    elif isinstance(v, numbers.Integral):
        return int(v)
    elif isinstance(v, numbers.Real):
        ok = float(v).is_integer()
    elif isinstance(v, str):
        ok = v.strip().lstrip("+-").isdigit()
    else:
        ok = False
    if not ok:
        either = " or 'auto'" if auto else ""
        raise ValueError(f"Schedule.{name} must be an int{either}, got {v!r}")
    return int(float(v)) if isinstance(v, numbers.Real) else int(v)


def _as_bool(name: str, v, auto: bool = True):
    """A switch: True or False (a numpy bool too), or 'auto' where it has a heuristic."""
    if auto and v == AUTO:
        return AUTO
    if _is_bool(v):
        return bool(v)
    either = " or 'auto'" if auto else ""
    raise ValueError(f"Schedule.{name} must be True or False{either}, got {v!r}")


def _same(v, accepted) -> bool:
    """Whether a saved value is ``accepted``: equal, and a switch only to a switch (1 is not
    True)."""
    return v == accepted and _is_bool(v) == _is_bool(accepted)


def as_schedule(schedule) -> "Schedule":
    """A schedule from what a user may pass: a :class:`Schedule`, None (the default), a mode
    name (``"values"``: ``Schedule(mode="values")``) or a dict of fields (``Schedule(**d)``)."""
    if schedule is None:
        return Schedule()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        return Schedule(mode=schedule)
    if isinstance(schedule, Mapping):
        schedule = _with_conv_input(schedule)
        for name, accepted in REMOVED_FIELDS.items():
            if name in schedule and not any(_same(schedule[name], v) for v in accepted):
                either = " or ".join(f"{name}={v!r}" for v in accepted)
                raise ValueError(f"schedule: {name}={schedule[name]!r} is no longer a field "
                                 f"(removed: measured slower, see bench/NOTES.md); only "
                                 f"{either} is accepted in a saved schedule")
        schedule = {k: v for k, v in schedule.items() if k not in REMOVED_FIELDS}
        unknown = sorted(set(schedule) - {f.name for f in fields(Schedule)})
        if unknown:
            raise ValueError(f"schedule: unknown field(s) {unknown}; the fields are "
                             f"{[f.name for f in fields(Schedule)]}")
        return Schedule(**schedule)
    raise TypeError(f"schedule must be a Schedule, a mode name ({MODES}) or a dict of "
                    f"Schedule fields, got {type(schedule).__name__}")


def _with_conv_input(saved: Mapping) -> Mapping:
    """A saved dict of fields with the earlier ``pad_input`` / ``tap_masks`` switches read as
    ``conv_input`` (:data:`LEGACY_CONV_INPUT`); a dict without them is returned as is."""
    if "pad_input" not in saved and "tap_masks" not in saved:
        return saved
    pair = tuple(saved.get(name, AUTO) for name in ("pad_input", "tap_masks"))
    if "conv_input" in saved:
        raise ValueError(f"schedule: conv_input={saved['conv_input']!r} together with "
                         f"pad_input / tap_masks (the switches conv_input replaces): give "
                         f"conv_input only")
    hit = [form for key, form in LEGACY_CONV_INPUT.items()
           if all(_same(v, k) for v, k in zip(pair, key))]
    if not hit:
        raise ValueError(f"schedule: pad_input={pair[0]!r} with tap_masks={pair[1]!r} names no "
                         f"one form of the convolution input; these switches are replaced by "
                         f"conv_input, one of {CONV_INPUTS} or 'auto' (both True asks for two "
                         f"forms at once)")
    rest = {k: v for k, v in saved.items() if k not in ("pad_input", "tap_masks")}
    return {**rest, "conv_input": hit[0]}


@dataclass
class Schedule:
    mode: str = AUTO
    rows_per_program: IntOrAuto = AUTO
    block_n: IntOrAuto = AUTO
    row_order: str = AUTO
    chunk: IntOrAuto = AUTO
    use_dot: Union[bool, str] = AUTO
    allow_tf32: bool = False
    max_statements_per_function: int = 2048
    num_warps: IntOrAuto = AUTO
    split_k: int = 1
    prefetch_tail: Union[bool, str] = AUTO
    prefetch_x: Union[bool, str] = AUTO
    conv_input: str = AUTO
    streams: IntOrAuto = AUTO

    def __post_init__(self):
        if self.mode not in MODES + (AUTO,):
            raise ValueError(f"Schedule.mode must be one of {MODES} or 'auto', got {self.mode!r}")
        if self.row_order not in ROW_ORDERS + (AUTO,):
            raise ValueError(f"Schedule.row_order must be one of {ROW_ORDERS} or 'auto', "
                             f"got {self.row_order!r}")
        if self.conv_input not in CONV_INPUTS + (AUTO,):
            raise ValueError(f"Schedule.conv_input must be one of {CONV_INPUTS} or 'auto', "
                             f"got {self.conv_input!r}")
        for name in INT_FIELDS:
            v = _as_int(name, getattr(self, name), auto=name not in (
                "max_statements_per_function", "split_k"))
            if v != AUTO and v < 1:
                raise ValueError(f"Schedule.{name} must be >= 1, got {v}")
            setattr(self, name, v)
        for name in BOOL_FIELDS:
            setattr(self, name, _as_bool(name, getattr(self, name), auto=name != "allow_tf32"))

    def __repr__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if getattr(self, f.name) != f.default]
        return f"Schedule({', '.join(parts)})"

    def for_kind(self, conv: bool) -> "Schedule":
        """This schedule as it applies to one kind of kernel: for a matrix product
        (``conv=False``) the :data:`CONV_FIELDS` are reset to 'auto', so ``repr`` prints only
        the fields that shape a ``W @ X`` kernel (the plan resolves them the same way);
        a convolution's schedule is returned unchanged."""
        return self if conv else self.replace(**{name: AUTO for name in CONV_FIELDS})

    def replace(self, **changes) -> "Schedule":
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(changes)
        return Schedule(**d)

    def __hash__(self):
        return hash(repr(self))
