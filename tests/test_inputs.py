"""Weight forms, bad input, and edge shapes (empty rows, all-zero, N = 1, strides, M = K = 1)."""
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dsl import Schedule, relu
from sparsert_triton import as_sparse_weight, sparse_kernel
from sparsert_triton.testing import assert_matches

MODES = ["values", "indices", "table", "blocks"]
DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def r(*shape, **kw):
    return torch.randn(*shape, **kw).to(DEV)


def e(*shape, **kw):
    return torch.empty(*shape, **kw).to(DEV) if kw.get("device") != "meta" else torch.empty(*shape, **kw)


def _fc(mode, **kw):
    @sparse_kernel(schedule=Schedule(mode=mode, block_n=16, rows_per_program=2, **kw))
    def fc(W, X, bias):
        return relu(W @ X + bias)
    return fc


def _weight(M=6, K=9, density=0.4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)).to(dtype)


def test_weight_forms_agree():
    W = _weight()
    mask = W != 0
    forms = [W, W.to_sparse_csr(), W.to_sparse(), sp.csr_matrix(W.numpy()), (mask, W),
             (mask, W[mask])]
    ref = as_sparse_weight(W)
    for f in forms:
        w = as_sparse_weight(f)
        assert (w.M, w.K, w.nnz) == (ref.M, ref.K, ref.nnz)
        assert np.array_equal(w.indptr, ref.indptr) and np.array_equal(w.indices, ref.indices)
        assert np.array_equal(w.values, ref.values)
    assert torch.equal(ref.to_dense(torch.float32), W)


@pytest.mark.parametrize("bad, exc, msg", [
    (torch.tensor([[1.0, float("nan")]]), ValueError, "NaN/inf"),
    (torch.tensor([[1.0, float("inf")]]), ValueError, "NaN/inf"),
    (torch.ones(2, 2, 2), ValueError, "2-D"),
    (torch.ones(2, 2, dtype=torch.int32), TypeError, "float32"),
    ((torch.ones(2, 3), torch.ones(3, 2)), ValueError, "disagrees with mask"),
    ((torch.ones(2, 3), torch.ones(5)), ValueError, "6 nonzeros"),
    ("weights.bin", TypeError, "torch.Tensor"),
])
def test_bad_weights(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        _fc("values").specialize(bad)


def test_meta_weight_is_a_clear_error():
    """A weight on the meta device (a model built without data) has no nonzeros to
    specialise to: an error naming the weight, not torch's copy error."""
    with pytest.raises(ValueError, match="weight is on the meta device"):
        _fc("values").specialize(torch.ones(2, 3, device="meta"))
    with pytest.raises(ValueError, match="values is on the meta device"):
        _fc("values").specialize((torch.ones(2, 3), torch.ones(2, 3, device="meta")))


def test_zero_sized_weight():
    with pytest.raises(ValueError, match="at least one row"):
        _fc("values").specialize(torch.zeros(0, 4))


@pytest.mark.parametrize("mode", MODES)
def test_bad_calls_name_the_argument(mode):
    k = _fc(mode).specialize(_weight())
    X, b = r(9, 5), r(6)
    with pytest.raises(ValueError, match="X has 8 rows"):
        k(r(8, 5), b)
    with pytest.raises(TypeError, match="X must be float32"):
        k(X.to(torch.int64), b)
    with pytest.raises(ValueError, match="2-D"):
        k(X[None], b)
    with pytest.raises(ValueError, match="X is on meta"):
        k(e(9, 5, device="meta"), b)
    with pytest.raises(ValueError, match="bias has shape"):
        k(X, r(7))
    with pytest.raises(TypeError, match="takes 1 operand"):
        k(X)
    with pytest.raises(ValueError, match="bias must be finite"):
        k(X, float("nan"))
    with pytest.raises(ValueError, match="out must be"):
        k(X, b, out=e(6, 4))


@pytest.mark.parametrize("mode", MODES)
def test_edge_shapes_are_correct(mode):
    fc = _fc(mode)
    cases = [
        _weight(1, 1, 1.0),               # M = K = 1
        _weight(7, 5, 0.0),               # all-zero matrix: relu(bias)
        torch.tensor([[0.0, 0, 0], [1.5, 0, -2], [0, 0, 0], [0.25, 3, 0]]),  # empty rows
        _weight(5, 11, 1.0),              # fully dense
    ]
    for W in cases:
        k = fc.specialize(W)
        for N in (1, 17):                 # N = 1 and N not dividing block_n
            X = r(W.shape[1], N)
            b = r(W.shape[0])
            Y = k(X, b)
            assert_matches(Y, k.reference(X, b), W, X, "float32")


@pytest.mark.parametrize("mode", MODES)
def test_any_strides_and_out(mode):
    W = _weight(6, 9)
    k = _fc(mode).specialize(W)
    base = r(30, 40)
    X = base[::3, 5:40:2]                 # non-contiguous in both dimensions, 10 x 18
    X = X[:9]
    b = r(12)[::2]              # strided bias
    out = e(18, 6).t()          # transposed output
    Y = k(X, b, out=out)
    assert Y is out
    assert_matches(Y, k.reference(X, b), W, X, "float32")
    Z = k(r(9, 0), b)
    assert Z.shape == (6, 0)


def test_mixed_weight_and_activation_dtypes():
    W = _weight(dtype=torch.float16)
    k = _fc("indices").specialize(W)
    X, b = r(9, 20), r(6)
    Y = k(X, b)
    assert Y.dtype == torch.float32
    assert_matches(Y, k.reference(X, b), W, X, "float16")


def test_float64_is_exact_to_rounding():
    W = _weight(dtype=torch.float64)
    for mode in MODES:
        k = _fc(mode).specialize(W)
        X, b = r(9, 20, dtype=torch.float64), r(6, dtype=torch.float64)
        Y = k(X, b)
        assert Y.dtype == torch.float64
        torch.testing.assert_close(Y.cpu(), k.reference(X, b), rtol=1e-13, atol=1e-13)


def test_nonfinite_activations_propagate_through_used_columns():
    """Documented: NaN/inf in X reach exactly the outputs whose row uses that column."""
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    for mode in ("values", "indices"):
        k = _fc(mode).specialize(W)
        X = torch.tensor([[float("nan")], [1.0]]).to(DEV)
        Y = k(X, torch.zeros(2, device=DEV))
        assert torch.isnan(Y[0, 0]) and Y[1, 0] == 2.0


def test_with_values_reuses_the_mask():
    W = _weight()
    for mode in MODES:
        k = _fc(mode).specialize(W)
        X, b = r(9, 8), r(6)
        k(X, b)
        k2 = k.with_values(torch.from_numpy(k.weight.values * -2).float())
        Y2 = k2(X, b)
        # indices/table: the same compiled module serves the new values; values: recompiled
        assert (k2._last.module is k._last.module) == (mode != "values")
        W2 = k2.weight.to_dense(torch.float32)
        assert torch.equal(W2, -2 * W)
        assert_matches(Y2, k2.reference(X, b), W2, X, "float32")
        with pytest.raises(ValueError, match="nonzeros"):
            k.with_values(torch.ones(3))


@pytest.mark.parametrize("mode", MODES)
def test_out_that_overlaps_is_refused(mode):
    """out= must have its own memory: not X (a square W would read X while overwriting it),
    not an expanded tensor (every column one element), not part of an operand; the residual
    itself may be out (each element is read, then written, by one program)."""
    W = _weight(6, 6, density=0.6)

    @sparse_kernel(schedule=Schedule(mode=mode, block_n=16, rows_per_program=2))
    def res(W, X, bias, r):
        return W @ X + bias + r
    k = res.specialize(W)
    X, b, r0 = r(6, 4), r(6), r(6, 4)
    with pytest.raises(ValueError, match="out overlaps X"):
        k(X, b, r0, out=X)
    with pytest.raises(ValueError, match="out overlaps X"):
        big = r(12, 4)
        k(big[:6], b, r0, out=big[3:9])
    with pytest.raises(ValueError, match="share memory"):
        k(X, b, r0, out=e(6, 1).expand(6, 4))
    with pytest.raises(ValueError, match="share memory"):
        k(X, b, r0, out=e(30).as_strided((6, 4), (3, 2)))
    buf = r(6, 5)
    with pytest.raises(ValueError, match="out overlaps bias"):
        k(X, buf[:, 0], r0, out=buf[:, 1:])
    ref = k.reference(X, b, r0)
    Y = k(X, b, r0.clone(), out=r0)              # in place on the residual
    assert Y is r0
    assert_matches(Y, ref, W, X, "float32")
    # interleaved strides whose elements are all distinct: accepted
    out = e(42).as_strided((6, 4), (4, 7))
    assert_matches(k(X, b, r0, out=out), k.reference(X, b, r0), W, X, "float32")


def test_outputs_beyond_32_bit_offsets_are_refused():
    """An output of more than 2**31 elements cannot be addressed by the kernels' 32-bit
    offsets, whether out= is passed or the call allocates it (an X expanded along N)."""
    k = _fc("table").specialize(_weight(3, 4))
    X = r(4, 1).expand(4, 2**31 + 64)
    with pytest.raises(ValueError, match="output .* spans more than 2\\*\\*31"):
        k(X, r(3))
    from sparsert_triton.testing import conv_kernel
    kc = conv_kernel(torch.ones(1, 1, 1, 1), Schedule(mode="table"), padding=0)
    with pytest.raises(ValueError, match="output .* spans more than 2\\*\\*31"):
        kc(r(1, 1, 1, 1).expand(2**16, 1, 2**8, 2**8))


def test_with_values_from_numpy_keeps_the_weights_dtype():
    """A numpy array of new values (e.g. the float64 CSR values ``w.values``) keeps the
    weight's dtype, rounded to it; a torch tensor brings its own dtype."""
    import numpy as np
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight((torch.randn(6, 9) * (torch.rand(6, 9) < 0.5)).half())
    again = w.with_values(w.values * 3.0)
    assert again.dtype == "float16"
    assert np.array_equal(again.values, torch.from_numpy(w.values * 3.0).half().double().numpy())
    assert w.with_values(torch.from_numpy(w.values)).dtype == "float64"
    assert w.with_values(torch.from_numpy(w.values).bfloat16()).dtype == "bfloat16"
