"""GPU timing for the benchmarks.

Two numbers per system:

* ``median_us`` -- GPU time per call: the calls are captured in a CUDA graph (launch cost
  hidden), the graph is replayed many times, each replay timed with CUDA events; the median
  replay divided by the calls in it. When one set of inputs fits in L2 (50 MB on an H100),
  the calls rotate over several copies of X so a call does not just re-read what the
  previous one left in L2.
* ``eager_us`` -- what a user sees from Python: host wall clock around many back-to-back
  calls, then a synchronize, divided by the number of calls (at these sizes the launch path
  matters as much as the kernel).

If graph capture fails (an op that cannot be captured), ``median_us`` falls back to CUDA
events around eager calls and ``Timing.method`` says ``"events"``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from sparsert_triton.runtime.timing import eager_us, events_median_us, graph_median_us  # noqa: F401

L2_BYTES = 50 * 1000 * 1000
MAX_BUFFERS = 8


@dataclass
class Timing:
    median_us: float
    eager_us: float
    buffers: int
    method: str      # "graph" or "events"


def require_cuda():
    """Raise a clear error unless a CUDA GPU is usable for timing."""
    import os
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("GPU timing needs TRITON_INTERPRET unset (the interpreter runs on the CPU)")
    if not torch.cuda.is_available():
        raise RuntimeError("GPU timing needs a CUDA GPU; none is available (torch.cuda.is_available() "
                           "is False)")


def buffer_count(bytes_per_set: int, l2_bytes: int = L2_BYTES, max_buffers: int = MAX_BUFFERS) -> int:
    """How many copies of the inputs to rotate over: enough that together they exceed L2
    twice over, at most ``max_buffers``; one when a single set already exceeds L2."""
    if bytes_per_set <= 0:
        return max_buffers
    if bytes_per_set >= l2_bytes:
        return 1
    return int(min(max_buffers, 1 + math.ceil(2 * l2_bytes / bytes_per_set)))


def time_system(make_call: Callable[[torch.Tensor], Callable], X: torch.Tensor,
                bytes_per_set: int) -> Timing:
    """Time ``make_call(X_i)()`` over rotated copies ``X_i`` of ``X`` (see module doc).
    ``bytes_per_set``: bytes one call touches (X, Y, weight) to decide the rotation."""
    require_cuda()
    n = buffer_count(bytes_per_set)
    xs = [X] + [X.clone() for _ in range(n - 1)]
    calls = [make_call(x) for x in xs]
    try:
        med, method = graph_median_us(calls), "graph"
    except Exception as e:          # not capturable: time eager launches instead
        try:
            torch.cuda.synchronize()
        except Exception:
            pass
        print(f"[timing] CUDA graph capture failed ({type(e).__name__}: {str(e)[:120]}); "
              "timing eager launches with events", file=sys.stderr)
        med, method = events_median_us(calls), "events"
    return Timing(med, eager_us(calls[0]), n, method)
