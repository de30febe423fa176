"""The internal, frozen and validated forms of a schedule and a call signature."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from dsl.schedule import MODES, ROW_BLOCK_MODES, ROW_ORDERS, Schedule

OPERAND_KINDS = ("number", "scalar", "row", "full")
#: Plan fields that only say how the kernels are launched, not what code they are
LAUNCH_ONLY = ("streams",)
#: Plan fields the plan derives itself, with no Schedule field (bench/NOTES.md, "Schedule
#: fields removed": no measured case needed a user to set them)
DERIVED = ("max_functions_per_kernel", "num_stages", "prefetch", "tap_segments", "bake_strides",
           "pdl", "transpose_x")


def _pow2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class Plan:
    """A fully resolved schedule. Every field is concrete; construction validates."""
    mode: str
    rows_per_program: int
    block_n: int
    row_order: str
    chunk: int
    use_dot: bool
    allow_tf32: bool
    max_statements_per_function: int
    max_functions_per_kernel: int
    num_warps: int
    num_stages: int
    prefetch: bool = False
    tap_segments: bool = False
    prefetch_tail: bool = False
    prefetch_x: bool = False
    bake_strides: bool = False
    pad_input: bool = False
    split_k: int = 1
    streams: int = 1
    pdl: bool = False
    tap_masks: bool = False
    #: the one-row table kernel transposes a row-major X (K-stride 1) itself, in the same
    #: launch, before its rows read it (set per call layout by ``pipeline.resolve``)
    transpose_x: bool = False

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"invalid schedule: {msg}")
        if self.mode not in MODES:
            bad(f"mode {self.mode!r} not in {MODES}")
        if self.row_order not in ROW_ORDERS:
            bad(f"row_order {self.row_order!r} not in {ROW_ORDERS}")
        if not _pow2(self.block_n) or self.block_n > 4096:
            bad(f"block_n must be a power of two <= 4096, got {self.block_n}")
        cap = 4096 if self.mode == "table" else 256
        if not 1 <= self.rows_per_program <= cap:
            bad(f"rows_per_program must be in 1..{cap} in {self.mode} mode, "
                f"got {self.rows_per_program}")
        if self.mode == "table":
            if not _pow2(self.rows_per_program):
                bad("table mode needs rows_per_program to be a power of two")
            if not _pow2(self.chunk):
                bad(f"chunk must be a power of two, got {self.chunk}")
            if self.use_dot and min(self.rows_per_program, self.chunk, self.block_n) < 16:
                bad("use_dot needs rows_per_program, chunk and block_n >= 16")
        elif self.use_dot and not self.bitmap_tiles:
            bad("use_dot applies to table mode only (and the bitmap and expand modes)")
        if self.split_k != 1 and self.row_blocks:
            if not 1 <= self.split_k <= 16:
                bad(f"split_k must be in 1..16 in {self.mode} mode, got {self.split_k}")
        elif self.split_k != 1:
            if not self.row_kernel:
                bad("split_k applies to the one-row table kernel and the blocks mode only (the "
                    "unrolled modes' column slices were never faster than the table kernel: "
                    "removed, see bench/NOTES.md)")
            if not _pow2(self.split_k) or self.split_k > 32:
                bad(f"split_k must be a power of two <= 32, got {self.split_k}")
            if self.tap_segments or self.prefetch_tail:
                bad("split_k walks a row as one segment of plain column/value loads: it "
                    "excludes tap_segments (use pad_input for a convolution) and "
                    "prefetch_tail")
        if self.mode == "blocks":
            if not _pow2(self.rows_per_program) or self.rows_per_program > 64:
                bad(f"blocks mode needs rows_per_program to be a power of two <= 64, "
                    f"got {self.rows_per_program}")
            if not _pow2(self.chunk) or self.chunk > 256:
                bad(f"blocks mode needs chunk to be a power of two <= 256, got {self.chunk}")
            if self.rows_per_program * self.chunk * self.block_n > 16384:
                bad("blocks mode keeps a rows_per_program x chunk x block_n accumulator: at "
                    f"most 16384 elements, got {self.rows_per_program} x {self.chunk} x "
                    f"{self.block_n}")
        if self.mode == "bitmap":
            if not _pow2(self.rows_per_program) or self.rows_per_program > 128:
                bad(f"bitmap mode needs rows_per_program to be a power of two <= 128, "
                    f"got {self.rows_per_program}")
            if self.chunk not in (32, 64, 128, 256):
                bad(f"bitmap mode needs chunk (positions per tile along K) in 32, 64, 128, "
                    f"256, got {self.chunk}")
            if self.use_dot and min(self.rows_per_program, self.block_n) < 16:
                bad("use_dot needs rows_per_program and block_n >= 16")
            if not self.use_dot and self.rows_per_program * self.chunk * self.block_n > 16384:
                bad("bitmap mode without use_dot keeps a rows_per_program x chunk x block_n "
                    f"accumulator: at most 16384 elements, got {self.rows_per_program} x "
                    f"{self.chunk} x {self.block_n}")
        if self.mode == "expand":
            if not _pow2(self.rows_per_program) or not 16 <= self.rows_per_program <= 128:
                bad(f"expand mode needs rows_per_program to be a power of two in 16..128, "
                    f"got {self.rows_per_program}")
            if not self.use_dot or self.block_n < 16:
                bad("expand mode multiplies dense tiles with tl.dot: use_dot and block_n >= 16")
            if self.split_k != 1:
                bad("expand mode does not cut K (split_k 1)")
            if self.streams != 1:
                bad("expand mode's product reads what its expansion wrote: one stream "
                    "(streams 1)")
        if self.bitmap_tiles:
            if self.chunk not in (32, 64, 128, 256):
                bad(f"{self.mode} mode needs chunk (positions per tile along K) in 32, 64, "
                    f"128, 256, got {self.chunk}")
            if self.row_order != "given":
                bad(f"{self.mode} mode keeps the rows in the given order (row_order='given')")
        if self.row_blocks:
            for name in ("pad_input", "bake_strides"):
                if getattr(self, name):
                    bad(f"{name} does not apply to {self.mode} mode")
        if self.mode not in ("table", "blocks", "bitmap", "expand") and \
                self.max_statements_per_function < self.rows_per_program + 1:
            bad("max_statements_per_function must exceed rows_per_program")
        if not _pow2(self.num_warps) or self.num_warps > 32:
            bad(f"num_warps must be a power of two <= 32, got {self.num_warps}")
        for name in ("prefetch", "tap_segments"):
            if getattr(self, name) and not self.row_kernel:
                bad(f"{name} applies to the one-row table kernel only")
        if self.pad_input and not (self.row_kernel or self.mode != "table"):
            bad("pad_input applies to the one-row table kernel and the unrolled modes only")
        if self.pad_input and self.tap_segments:
            bad("pad_input replaces tap_segments (every nonzero is one offset into the padded "
                "input): set tap_segments=False")
        if self.tap_masks and not self.row_kernel:
            bad("tap_masks applies to the one-row table kernel only (the unrolled modes use "
                "pad_input or masked loads)")
        if self.tap_masks and (self.pad_input or self.tap_segments):
            bad("tap_masks replaces pad_input and tap_segments (one loop of masked loads from "
                "the unpadded X): set both False")
        if self.prefetch_tail and not self.prefetch:
            bad("prefetch_tail applies to the one-row table kernel only (it reuses the columns "
                "and values its loop prefetched)")
        if self.prefetch_x and not (self.prefetch_tail and self.split_k == 1):
            bad("prefetch_x needs prefetch_tail (the tail consumes the prefetched X rows) "
                "and split_k 1")
        if self.transpose_x and not (self.row_kernel and self.split_k == 1
                                     and not (self.pad_input or self.tap_masks)):
            bad("transpose_x applies to the one-row table kernel of a matrix product only "
                "(split_k 1)")
        if not 1 <= self.streams <= 32:
            bad(f"streams must be in 1..32, got {self.streams}")
        if not 1 <= self.num_stages <= 8:
            bad(f"num_stages must be in 1..8, got {self.num_stages}")

    @property
    def row_kernel(self) -> bool:
        """Whether this is the one-row table kernel (a scalar-FMA loop over each row's own
        nonzeros; for a convolution, over each row's nonzeros of one kernel tap at a time)."""
        return self.mode == "table" and not self.use_dot

    @property
    def bitmap_tiles(self) -> bool:
        """Whether the weight is stored as the bitmap layout's tiles (``bitmap.Bitmap``: a bit
        per position and packed values): the bitmap and expand modes."""
        return self.mode in ("bitmap", "expand")

    @property
    def row_blocks(self) -> bool:
        """Whether this is a row-block mode (blocks, bitmap, expand): a grid of (row blocks,
        column tiles, ``split_k``), the K slices of a tile summed in order by its last program
        (the expand mode's product does not cut K)."""
        return self.mode in ROW_BLOCK_MODES

    def to_schedule(self, conv: Optional[bool] = None) -> Schedule:
        """The plan as a schedule (every field concrete). ``conv``: the kind of kernel it
        computes, where known: a matrix product's leaves the convolution-only fields 'auto'
        (:meth:`Schedule.for_kind`), for display; ``None`` keeps every field."""
        s = Schedule(**self.schedule_fields())
        return s if conv is None else s.for_kind(conv)

    @property
    def conv_input(self) -> str:
        """The convolution input's form (``Schedule.conv_input``) this plan reads: the padded
        copy, tap masks, else X itself: tap segments in the one-row kernel (a split row's
        (c_in, tap) order too), masked loads in the other kernels."""
        if self.pad_input:
            return "padded"
        return "masked" if self.tap_masks or not self.row_kernel else "segments"

    def schedule_fields(self) -> dict:
        """The fields a :class:`Schedule` holds: all but :data:`DERIVED`, with the input's
        form as ``conv_input`` for the plan's ``pad_input`` and ``tap_masks`` flags."""
        d = {k: v for k, v in asdict(self).items()
             if k not in DERIVED + ("pad_input", "tap_masks")}
        return {**d, "conv_input": self.conv_input}

    def code_fields(self) -> dict:
        """The fields that shape the generated code (the plan's share of the cache key and
        of the source header, the :data:`DERIVED` ones on a line of their own): all but
        :data:`LAUNCH_ONLY`."""
        return {k: v for k, v in asdict(self).items() if k not in LAUNCH_ONLY}


@dataclass(frozen=True)
class Signature:
    """What a call brings: dtypes and the kind of each epilogue operand.

    Operand kinds: ``number`` (a Python number, passed by value), ``scalar`` (a one-element
    tensor), ``row`` (one value per output row, shape (M,) or (M, 1)), ``full`` (M x N).
    """
    x_dtype: str
    w_dtype: str
    out_dtype: str
    operand_kinds: Tuple[Tuple[str, str], ...]

    @property
    def acc_dtype(self) -> str:
        """float64 if either input is float64, else float32."""
        return "float64" if "float64" in (self.x_dtype, self.w_dtype) else "float32"

    def kind(self, name: str) -> str:
        return dict(self.operand_kinds)[name]
