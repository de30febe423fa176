"""sparsert-triton: SparseRT-style code generation for unstructured weight sparsity on Triton.

    from sparsert_triton import sparse_kernel, Schedule
    from dsl import relu

    @sparse_kernel(schedule=Schedule(mode="values", rows_per_program=8, block_n=128))
    def fc(W, X, bias):
        return relu(W @ X + bias)

    k = fc.specialize(weight)   # the weight's zeros are the mask
    Y = k(X, bias)              # == relu(weight @ X + bias[:, None])

PyTorch modules: ``from sparsert_triton import sparsify, SparseLinear, SparseConv2d`` (from
:mod:`sparsert_triton.nn`, imported on first use: ``import sparsert_triton`` does not register
the custom ops).

The package, room by room:

* front ends, here at the top: :mod:`.api` (``sparse_kernel``, ``SpecializedKernel``: a
  kernel's specialisation and calls), :mod:`.nn`, :mod:`.convert` and :mod:`.ops` (PyTorch
  modules, ``sparsify`` and the custom ops), :mod:`.cli` (the ``sparsert`` command), :mod:`.tune` (the autotuner), :mod:`.viz`
  (plots), :mod:`.testing` (Hypothesis strategies and the float64 check), :mod:`.demo`;
  with what they share: :mod:`.weights` (``SparseWeight``: a mask and its values),
  :mod:`.estimate` (the predicted speedup), :mod:`.matrix_io` and :mod:`.dlmc` (matrix files);
* :mod:`.compiler`: the stages ``canonicalise -> specialise -> lower -> render -> compile``
  that turn a traced program (``dsl``) and a weight into Triton kernels, run in order by
  :mod:`.compiler.pipeline` (``SPARSERT_DUMP=dir`` writes each stage's output);
* :mod:`.runtime`: one call: its arguments' checks and signature, the kernel cache, the
  launch (direct launchers, per-layout call plans, the zero-padded convolution input) and
  GPU timing.
"""
__version__ = "0.1.0"

from dsl import Schedule  # noqa: E402

from .api import SparseKernel, SpecializedKernel, sparse_kernel  # noqa: E402
from .compiler.plan import Plan, Signature  # noqa: E402
from .weights import SparseWeight, as_sparse_weight  # noqa: E402

#: names served by sparsert_triton.nn, imported when first asked for
_NN = ("SparseConv2d", "SparseLinear", "sparsify")

__all__ = ["Plan", "Schedule", "Signature", "SparseConv2d", "SparseKernel", "SparseLinear",
           "SparseWeight", "SpecializedKernel", "as_sparse_weight", "sparse_kernel", "sparsify",
           "__version__"]


def __getattr__(name):
    if name in _NN:
        from . import nn
        return getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
