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
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

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


def _warm(calls: Sequence[Callable]):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _per_call_us(calls: Sequence[Callable], rounds: int = 3) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(rounds):
        for c in calls:
            c()
    end.record()
    end.synchronize()
    return max(0.5, start.elapsed_time(end) * 1e3 / (rounds * len(calls)))


def graph_median_us(calls: Sequence[Callable], replays: int = 25, target_us: float = 1000.0,
                    max_calls: int = 200) -> float:
    """Median GPU microseconds per call, from CUDA-graph replays cycling through ``calls``."""
    _warm(calls)
    per = _per_call_us(calls)
    n = int(min(max_calls, max(len(calls), target_us // per)))
    n = max(len(calls), n - n % len(calls))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(n):
            calls[i % len(calls)]()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / n)
    del g
    return statistics.median(times)


def events_median_us(calls: Sequence[Callable], replays: int = 25, target_us: float = 1000.0) -> float:
    """Median microseconds per call of eager launches timed with CUDA events (fallback)."""
    _warm(calls)
    per = _per_call_us(calls)
    rounds = int(max(1, min(200, target_us // (per * len(calls)))))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        for _ in range(rounds):
            for c in calls:
                c()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (rounds * len(calls)))
    return statistics.median(times)


def eager_us(fn: Callable, target_s: float = 0.02, repeats: int = 5, max_calls: int = 2000) -> float:
    """Median over ``repeats`` of host wall-clock microseconds per call for back-to-back
    calls followed by one synchronize."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(1e-6, time.perf_counter() - t0)
    n = int(min(max_calls, max(10, target_s / one)))
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6 / n)
    return statistics.median(times)


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
