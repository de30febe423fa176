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
"""
__version__ = "0.1.0"

from dsl import Schedule  # noqa: E402

from .api import SparseKernel, SpecializedKernel, sparse_kernel  # noqa: E402
from .plan import Plan, Signature  # noqa: E402
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
