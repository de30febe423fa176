"""Benchmarks: DLMC sparse x dense suite, baselines, timing, report, compile-time curve."""
