"""The runtime: one call of a specialised kernel, from its arguments to the launched kernels.

A call ``k(X, *operands, out=...)`` goes, in order:

1. :mod:`.arguments`: check X, the operands and ``out``; the call's ``Signature`` (dtypes and
   operand kinds) selects the compiled variant (built by ``sparsert_triton.compiler`` on a
   miss, its source and layout kept in :mod:`.cache`, the on-disk kernel cache).
2. :mod:`.padding`: a convolution kernel that reads a zero-padded input gets that copy, in one
   kernel.
3. :mod:`.launch`: pack the arguments for the kernels, work out their grids and launch options,
   and launch them (the first launch compiles; several streams where the plan asks).
4. :mod:`.direct`: later launches call each compiled kernel's own launcher, skipping Triton's
   per-call Python; :mod:`.callplan` keeps what steps 1-3 decided per call layout, so a
   repeated call skips the checks and the lookups.

:mod:`.timing` measures calls on the GPU (CUDA graphs, CUDA events, wall clock) for the tuner,
the command line and the benchmarks.
"""
