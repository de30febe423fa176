"""GPU timing shared by the tuner, the command line and the benchmarks.

``graph_median_us``: the calls captured in a CUDA graph (launch cost hidden), the graph replayed
many times, each replay timed with CUDA events; the median replay divided by the calls in it.
``events_median_us``: CUDA events around eager launches (for calls that cannot be captured).
``eager_us``: host wall clock around many back-to-back calls, then a synchronize (what a user
sees from Python).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch


def _warm(calls: Sequence[Callable]):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _events_us(calls: Sequence[Callable], rounds: int) -> float:
    """Microseconds per call of ``rounds`` passes over ``calls``, between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(rounds):
        for c in calls:
            c()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (rounds * len(calls))


def _per_call_us(calls: Sequence[Callable], rounds: int = 3) -> float:
    return max(0.5, _events_us(calls, rounds))


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
    return statistics.median(_events_us(calls, rounds) for _ in range(replays))


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
