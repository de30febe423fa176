"""Launch: pack a checked call's arguments for the kernels of a variant and run them.

The call was checked and given its signature by :mod:`.arguments`; here its tensors,
operands, strides and sizes become the kernels' argument list (:func:`operand_args`,
:func:`size_args`, the same list for every kernel of the variant; the expand mode's kernels
for a call captured in a CUDA graph take :func:`captured_args`), each kernel gets its grid
(:func:`grids`) and Triton's launch options (:func:`launch_options`), and :func:`run` launches
them: the first launch compiles (in Triton's cache scoped to ours, optionally in parallel and
with the trimmed pass pipeline), later ones go through the direct launcher, on side streams
when the plan asks for several (:func:`side_by_side`).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from ..compiler import fastpasses
from ..compiler.compile import compile_workers, interpreting, triton_cache_scope, warm_in_parallel
from ..compiler.bitmap import expansion_programs
from ..compiler.render.expand import BUFFERS as EXPAND_BUFFERS, counters as expand_counters
from ..compiler.render.transposed import COUNTERS as TRANSPOSE_COUNTERS
from .direct import spec_key
from .workspace import capturing, counters, scratch
from ..compiler.fastpasses import fast_pipeline
from ..compiler.plan import Signature


def operand_args(sig: Signature, operands, conv: bool = False) -> list:
    args = []
    for (name, kind), v in zip(sig.operand_kinds, operands):
        if kind == "number":
            args.append(float(v))
        elif kind == "scalar":
            args.append(v)
        elif kind == "row":
            args += [v, v.stride(0)]
        elif conv:
            args += [v, v.stride(1), v.stride(0), v.stride(2), v.stride(3)]
        else:
            args += [v, v.stride(0), v.stride(1)]
    return args


def size_args(X: torch.Tensor, Y: torch.Tensor) -> list:
    """The integer arguments of a launch after the operands: X's and Y's strides and sizes."""
    if X.dim() == 4:     # convolution: N = B * Ho * Wo output positions
        B, _, Ho, Wo = Y.shape
        return [*X.stride(), X.shape[2], X.shape[3], Y.stride(1), Y.stride(0), Y.stride(2),
                Y.stride(3), Wo, Ho * Wo, B * Ho * Wo]
    return [X.stride(0), X.stride(1), Y.stride(0), Y.stride(1), X.shape[1]]


def grids(variant, N: int, captured: bool = False) -> list:
    """(kernel, grid) of every kernel of a variant that has work, for N output columns; those
    of a call captured in a CUDA graph where the variant has its own (:func:`captured_call`)."""
    plan = variant.plan
    nt = -(-N // plan.block_n)
    out = []
    kernels = variant.captured if captured else variant.kernels
    for i, (fn, groups) in enumerate(kernels):
        if groups == 0:
            continue
        if plan.mode == "expand":     # shares of K tiles per row block, then column tiles
            G = expansion_programs(groups, variant.k_tiles)
            out.append((fn, (groups, nt if i else G, 1) if captured else
                        (groups * (G + nt), 1, 1)))
            continue
        if plan.transpose_x:          # shares of X per column tile, then the rows
            out.append((fn, ((variant.shares + groups) * nt, 1, 1)))
            continue
        out.append((fn, (groups, nt, plan.split_k) if plan.row_blocks else
                    (groups, nt) if variant.table else (nt, groups)))
    return out


def captured_call(variant, X: torch.Tensor) -> bool:
    """Whether this call runs the variant's kernels for CUDA-graph capture: it has its own
    (the expand mode's two launches) and X's stream is being captured."""
    return variant.captured is not None and X.is_cuda and capturing()


def launch_options(plan) -> dict:
    opts = dict(num_warps=plan.num_warps, num_stages=plan.num_stages, enable_fp_fusion=True)
    if plan.pdl:
        opts["launch_pdl"] = True
    return opts


def run(variant, X: torch.Tensor, Y: torch.Tensor, operands, sig: Signature):
    """Launch every kernel of a variant: Y = epilogue(W @ X). Returns the launch arguments
    (the same for every kernel of the variant).

    The first call of a variant with kernels of its own for CUDA-graph capture (the expand
    mode) made outside a capture runs those kernels too, before its own: they are compiled
    and loaded then, and a capture after eager calls launches compiled kernels only, as
    for every other variant. (The capture failure that prompted it was torch creating its
    cuBLAS handle under capture, since fixed by ``workspace.create_blas_handle``:
    bench/NOTES.md, twenty-first and twenty-second sessions.)"""
    plan = variant.plan
    bufs = variant.buffers(X.device)
    strides = size_args(X, Y)
    N = strides[-1]
    ops = operand_args(sig, operands, X.dim() == 4)
    opts = launch_options(plan)
    first = not variant.launched
    captured = captured_call(variant, X)
    bufs = [*bufs, *call_buffers(variant, X, Y.shape[0], N, sig, captured or (
        plan.transpose_x and X.is_cuda and capturing()))]
    args = (X, *bufs, Y, *ops, *strides)      # the same for every kernel of the variant
    forms = [(captured, args)]
    if first and not captured and variant.captured is not None and variant.launcher.enabled:
        forms.insert(0, (True, captured_args(variant, args)))
    launches = [(fn, grid, a) for c, a in forms for fn, grid in grids(variant, N, c)]
    # Triton's specialisation facts of the arguments, worked out once per form
    specs = {id(a): spec_key(a) if variant.launcher.enabled else None for _, a in forms}
    fast = fastpasses.applies(plan)
    if first and len(launches) > 1 and compile_workers() > 1 and not interpreting():
        warm_in_parallel(variant, launches, opts, fast, compile_workers())
    with (triton_cache_scope() if first else nullcontext()), fast_pipeline(first and fast):
        calls = [lambda f=fn, g=grid, a=a: variant.launcher(f, g, a, opts, X.device,
                                                            specs[id(a)])
                 for fn, grid, a in launches]
        if plan.streams > 1 and len(calls) > 1 and X.is_cuda:
            side_by_side(calls, X.device, plan.streams)
        else:
            for call in calls:
                call()
    variant.launched = True
    return args


def captured_args(variant, args: tuple) -> tuple:
    """A call's launch arguments (:func:`run`'s) for the variant's captured kernels: the
    expand mode's two kernels count nothing, so the scratch stands in for the counters."""
    scr = 1 + EXPAND_BUFFERS.index("SCR")          # X, the kernels' buffers (.., SCR, CNT), ..
    return (*args[:scr + 1], args[scr], *args[scr + 2:])


def call_buffers(variant, X: torch.Tensor, M: int, N: int, sig: Signature,
                 captured: bool = False) -> tuple:
    """The buffers a call of M output rows needs after the variant's own: the row-block
    modes' split-K workspace and counters (made per call on X's device, from torch's caching
    allocator), the scratch and counters of the expand mode and the transposing table kernel
    (:func:`workspace_buffers`). ``captured``: whether X's stream is being captured (the
    kept buffers are not used then)."""
    plan = variant.plan
    sizes = workspace_sizes(variant, X.shape[0], N) if X.dim() == 2 else None
    if sizes is not None:
        stream = variant.launcher.stream_of(X.device) if X.is_cuda else None
        return workspace_buffers(variant, *sizes, X.dtype, X.device, stream, captured)
    if plan.row_blocks and plan.split_k > 1:
        return block_slice_buffers(variant, M, N, -(-N // plan.block_n), sig, X.device)
    return ()


def workspace_sizes(variant, K: int, N: int):
    """(elements of the scratch, of the counters) of a variant whose kernels write a scratch
    and read it back in the same call, or None: the expand mode's dense tiles of W ((row
    blocks x rows_per_program) x (K tiles x chunk)), the transposing table kernel's X
    transposed (K x N)."""
    plan = variant.plan
    if plan.mode == "expand":
        blocks = variant.kernels[0][1]
        return (blocks * plan.rows_per_program * variant.k_tiles * plan.chunk,
                expand_counters(blocks))
    if plan.transpose_x:
        return (K * N, TRANSPOSE_COUNTERS)
    return None


def workspace_buffers(variant, numel: int, count: int, dtype: torch.dtype,
                      device: torch.device, stream, captured: bool = False) -> tuple:
    """A call's scratch (``numel`` of ``dtype``) and counters (``count`` int32 zeros, left
    zero by the kernel) for kernels queued on ``stream`` (None on the CPU): views of buffers
    kept for this device, stream and thread (:mod:`.workspace`), made per call under
    capture. A captured expand-mode call's two kernels count nothing: the scratch stands in
    for the counters."""
    scr = scratch(numel, dtype, device, stream, captured)[0]
    if captured and variant.plan.mode == "expand":
        return (scr, scr)
    return (scr, counters(count, device, stream, captured)[0])


def block_slice_buffers(variant, M: int, N: int, nt: int, sig: Signature, device):
    """Per call, for the blocks mode's K slices (``split_k``): the workspace of partial sums,
    ``split_k x M x N`` in the accumulator dtype, and one zeroed arrival counter per (row block,
    column tile); the last slice resets its counter."""
    blocks = variant.kernels[0][1]
    acc = torch.float64 if sig.acc_dtype == "float64" else torch.float32
    ws = torch.empty(max(1, variant.plan.split_k * M * N), dtype=acc, device=device)
    return ws, torch.zeros(max(1, blocks * nt), dtype=torch.int32, device=device)


#: side streams per device, created on first use and kept (a stream is cheap to keep, costly
#: to create per call)
_side_streams = {}


def side_by_side(launches, device: torch.device, streams: int, cuda=None):
    """Run ``launches`` (callables that each launch one kernel on the current stream) on up
    to ``streams`` side streams: every side stream first waits for the caller's stream (the
    inputs are ready), the launches go round-robin onto them, and the caller's stream then
    waits for every side stream used (the output is complete before anything the caller runs
    next). Works under CUDA-graph capture (a fork and a join of the captured stream).
    ``cuda``: the stream API (``torch.cuda``; a stand-in in the CPU tests)."""
    cuda = cuda or torch.cuda
    index = device.index if device.index is not None else cuda.current_device()
    pool = _side_streams.setdefault((cuda, index), [])
    used = min(streams, len(launches))
    while len(pool) < used:
        pool.append(cuda.Stream(index))
    main = cuda.current_stream(index)
    fork = main.record_event()          # one event for every side stream to wait on
    for s in pool[:used]:
        s.wait_event(fork)
    for i, launch in enumerate(launches):
        with cuda.stream(pool[i % used]):
            launch()
    for s in pool[:used]:
        main.wait_event(s.record_event())
