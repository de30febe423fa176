"""Scratch and counters kept between calls: the expand mode's dense tiles, the transposing
table kernel's ``XT`` and their counters without an allocation per call.

The expand mode writes the weight's dense tiles into a scratch and reads them back in the
same call (``render/expand.py``); the one-row table kernel on a row-major X writes X
transposed and reads it back (``render/transposed.py``). Allocating that scratch costs an
eager call ~2.5 us of host time on the H100 host (torch's caching allocator behind Python's
argument parsing), a tenth of the whole call. :func:`scratch` instead hands out a view of one
buffer kept per (device, stream, thread):

* kernels queued on one stream run in order, and every kernel that uses the scratch waits
  for the kernel before it has finished before touching memory (``gdc_wait`` under
  programmatic dependent launch), so a call cannot overwrite a scratch the call before it is
  still reading;
* one buffer per thread as well as per stream: two threads queueing on one stream could
  otherwise interleave one call's expansion between another's expansion and product;
* never while the stream is being captured into a CUDA graph: a graph keeps its scratch
  in its own pool (a graph replayed on another stream beside eager calls would race with a
  shared buffer), so a captured call allocates as before;
* at most :data:`MAX_BYTES` per buffer: a bigger scratch (a large layer, whose GPU time
  dwarfs an allocation) comes from the caching allocator per call.

The kernels' counters (:func:`counters`) are kept the same way, zeroed once: each kernel
leaves them zero when it ends. On the CPU (the interpreter, where a kernel stopped by an
error would leave them counted) and under capture they are zeroed per call. A planned call
remembers the addresses it was handed with the thread's :func:`generation`, which changes
whenever a kept buffer is replaced or released.

A buffer grows to the largest scratch asked of it. The buffers are thread-local (they go
with their thread); :func:`release` drops the calling thread's (their memory goes back to
torch's caching allocator, ``torch.cuda.empty_cache`` frees it).
"""
from __future__ import annotations

import threading
from typing import Optional, Tuple

import torch

#: the largest scratch kept between calls: 32 MiB (a 4096 x 4096 half-precision weight)
MAX_BYTES = 32 << 20
#: views kept per buffer before they are dropped (one per scratch size and dtype)
MAX_VIEWS = 64

#: whether the current CUDA stream is being captured (a CPU build of torch has no streams)
_is_capturing = torch._C._cuda_isCurrentStreamCapturing if torch.backends.cuda.is_built() \
    else (lambda: False)


def capturing() -> bool:
    """Whether the current CUDA stream is being captured into a CUDA graph."""
    return _is_capturing()


class _Kept(threading.local):
    """This thread's buffers (freed with the thread): ``buffers`` (device, stream) -> bytes;
    ``views`` (device, stream, dtype, numel) -> (a view of the buffer, its address);
    ``counters`` (device, stream) -> (int32 zeros, their address); ``blas`` the devices this
    thread has a cuBLAS handle on (:func:`create_blas_handle`)."""

    def __init__(self):
        self.buffers, self.views, self.counters, self.blas = {}, {}, {}, set()
        self.generation = object()


def generation() -> object:
    """This thread's workspace generation: a new object whenever a kept buffer or counter
    tensor is replaced or released, so an address remembered with the generation it was
    handed out in is still the buffer's while the generation is the same object."""
    return _kept.generation


_kept = _Kept()


def scratch(numel: int, dtype: torch.dtype, device: torch.device, stream: Optional[int],
            captured: Optional[bool] = None) -> Tuple[torch.Tensor, int]:
    """A tensor of ``numel`` elements of ``dtype`` on ``device`` and its address, for kernels
    this thread queues on ``stream`` (the device's current stream; None on the CPU, where the
    interpreter runs each kernel to its end before the next). Its contents are undefined.
    ``captured``: whether the stream is being captured, if the caller asked already."""
    kept = _kept
    key = (device, stream, dtype, numel)
    capturing = stream is not None and (_is_capturing() if captured is None else captured)
    hit = None if capturing else kept.views.get(key)
    if hit is not None:
        return hit
    nbytes = numel * dtype.itemsize
    if capturing or nbytes > MAX_BYTES:
        t = torch.empty(numel, dtype=dtype, device=device)
        return t, t.data_ptr()
    owner = (device, stream)
    buf = kept.buffers.get(owner)
    if buf is None or buf.numel() < nbytes:
        # a bigger buffer replaces the old one; the views of the old one are dropped with it
        # (their memory returns to the caching allocator on this stream, after the kernels
        # already queued that read it)
        buf = kept.buffers[owner] = torch.empty(nbytes, dtype=torch.uint8, device=device)
        kept.generation = object()
        for k in [k for k in kept.views if k[:2] == owner]:
            del kept.views[k]
    if len(kept.views) >= MAX_VIEWS:
        kept.views.clear()
    t = buf[:nbytes].view(dtype)
    kept.views[key] = hit = (t, t.data_ptr())
    return hit


def counters(numel: int, device: torch.device, stream: Optional[int],
             captured: Optional[bool] = None) -> Tuple[torch.Tensor, int]:
    """At least ``numel`` int32 zeros on ``device`` and their address, for a kernel this thread
    queues on ``stream`` that leaves them zero when it ends (one counting in them waits for
    the kernel before it, as the expand kernel does): kept between calls on a GPU stream,
    made per call on the CPU (``stream`` None) and under CUDA-graph capture. ``captured``:
    whether the stream is being captured, if the caller asked already."""
    if stream is None or (_is_capturing() if captured is None else captured):
        t = torch.zeros(numel, dtype=torch.int32, device=device)
        return t, t.data_ptr()
    kept = _kept.counters
    hit = kept.get((device, stream))
    if hit is None or hit[0].numel() < numel:
        t = torch.zeros(max(numel, 1024), dtype=torch.int32, device=device)
        kept[(device, stream)] = hit = (t, t.data_ptr())
        _kept.generation = object()
    return hit


def create_blas_handle(device: torch.device) -> None:
    """Create this thread's cuBLAS handle on ``device`` now, unless a stream is being captured.

    torch creates a thread's handle on its first cuBLAS call, and creating it while a stream
    is captured into a CUDA graph invalidates the capture (``cublasCreate``:
    CUBLAS_STATUS_NOT_INITIALIZED). A model whose Linears are all sparse can run eagerly
    without a cuBLAS call and then make its first one under capture: transformers' BERT-base
    at 90% did, in its attention, on the H100 (bench/NOTES.md, twenty-second session). A
    sparse kernel's checked call (the first of each input layout, every call with ``out=``)
    on a GPU creates it, once per thread and device."""
    made = _kept.blas
    if device in made or capturing():
        return
    with torch.cuda.device(device):
        torch.cuda.current_blas_handle()
    made.add(device)


def release() -> None:
    """Drop this thread's kept buffers (their memory returns to torch's caching allocator;
    a thread's buffers also go when the thread ends)."""
    _kept.views.clear()
    _kept.buffers.clear()
    _kept.counters.clear()
    _kept.generation = object()


def kept_bytes() -> int:
    """The bytes held by this thread's kept buffers."""
    return sum(b.numel() for b in _kept.buffers.values()) + \
        sum(t.numel() * 4 for t, _ in _kept.counters.values())
