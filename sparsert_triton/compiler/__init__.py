"""The compiler: a traced program and a weight in, a stored module of Triton kernels out.

The stages, in order (``api.SparseKernel.specialize`` runs the first two once per weight;
:func:`.pipeline.resolve` and :func:`.pipeline.build` run the rest once per call signature,
in one place):

1. ``dsl.trace`` (the ``dsl`` package): the kernel's Python function becomes an
   ``ir.Program``, ``epilogue(W @ X)``.
2. :mod:`.canonicalise`: fold the epilogue; ``plan_for`` resolves the lenient ``Schedule``
   into a frozen, validated :class:`.plan.Plan` for the matrix, N, the dtypes and the device
   (:mod:`.plan`: ``Plan`` and the call's ``Signature``).
3. :mod:`.specialise`: lay the mask out for the plan: unrolled row groups and parts
   (``values``, ``indices``), a table of padded column unions (``table``), or row blocks of
   padded nonzero lists (:mod:`.blocks`, the ``blocks`` mode).
4. :mod:`.lower`: the layout becomes kernel IR (statements per function, functions per kernel).
5. :mod:`.render`: the IR becomes readable Triton source, one module per variant, stored in
   the kernel cache (``runtime.cache``) with the layout's arrays.
6. :mod:`.compile`: import the stored module; Triton compiles a kernel on its first launch
   (in our cache's Triton folder, with :mod:`.fastpasses`' trimmed pass pipeline for the
   unrolled kernels), or ahead of time for a target without a GPU (``precompile``).

Beside the stages: :mod:`.conv` (a convolution as the product ``W_flat @ im2col(X)``: its
geometry and weight layout) and :mod:`.reference` (a program evaluated with plain torch in
float64: the oracle the tests compare against). ``SPARSERT_DUMP=dir`` writes every stage's
output of each newly built variant (``pipeline._dump``). Launching the compiled kernels is the
runtime's part (``sparsert_triton.runtime``).
"""
