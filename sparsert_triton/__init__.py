"""sparsert-triton: SparseRT-style code generation for unstructured weight sparsity on Triton.

    from sparsert_triton import sparse_kernel, Schedule
    from dsl import relu

    @sparse_kernel(schedule=Schedule(mode="values", rows_per_program=8, block_n=128))
    def fc(W, X, bias):
        return relu(W @ X + bias)

    k = fc.specialize(weight)   # the weight's zeros are the mask
    Y = k(X, bias)              # == relu(weight @ X + bias[:, None])
"""
__version__ = "0.1.0"

from dsl import Schedule  # noqa: E402

from .api import SparseKernel, SpecializedKernel, sparse_kernel  # noqa: E402
from .plan import Plan, Signature  # noqa: E402
from .weights import SparseWeight, as_sparse_weight  # noqa: E402

__all__ = ["Plan", "Schedule", "Signature", "SparseKernel", "SparseWeight", "SpecializedKernel",
           "as_sparse_weight", "sparse_kernel", "__version__"]
