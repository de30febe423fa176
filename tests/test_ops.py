"""The custom ops sparsert::spmm / spmm_t / spmm_grad_values: values, gradients, fake tensors.

References are float64 torch on the masked dense weight.
"""
import copy
import gc
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparsert_triton import ops

M, K, N = 12, 10, 5
DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


def make_pattern(seed=0, density=0.35, schedule=None, m=M, k=K, device=DEV):
    """A random pattern (drawn on the CPU) and its weight and mask on ``device``."""
    with torch.device("cpu"):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(m, k, generator=g)
        W[torch.rand(m, k, generator=g) > density] = 0
        mask = W != 0
        indptr = np.concatenate([[0], np.cumsum(mask.sum(1).numpy())])
        cols = mask.nonzero(as_tuple=True)[1].numpy()
    return ops.SparsePattern(m, k, indptr, cols, schedule), W.to(device), mask.to(device)


def dense_of(p, values):
    """The masked dense weight of pattern ``p`` with ``values`` (differentiable)."""
    flat = values.new_zeros(p.M * p.K).index_put((p.flat_index(values.device),), values)
    return flat.view(p.M, p.K)


def test_csr_transpose_matches_scipy():
    p, W, _ = make_pattern(seed=3)
    indptr_t, indices_t, perm = ops.csr_transpose(p.M, p.K, p.indptr, p.indices)
    vals = np.arange(1, p.nnz + 1, dtype=np.float64)
    ref = sp.csr_array((vals, p.indices, p.indptr), shape=(p.M, p.K)).T.tocsr()
    ref.sort_indices()
    np.testing.assert_array_equal(indptr_t, ref.indptr)
    np.testing.assert_array_equal(indices_t, ref.indices)
    np.testing.assert_array_equal(vals[perm], ref.data)


@pytest.mark.parametrize("with_bias", [False, True])
def test_spmm_matches_dense_on_strided_input(with_bias):
    p, W, mask = make_pattern()
    values = W[mask]
    bias = torch.randn(M) if with_bias else None
    Xrows = torch.randn(N, K)
    Y = ops.spmm(Xrows.t(), values, bias, *p.op_args())    # X^T: a transposed view
    ref = W.double() @ Xrows.double().t()
    if with_bias:
        ref = ref + bias.double()[:, None]
    assert Y.shape == (M, N) and Y.dtype == torch.float32
    torch.testing.assert_close(Y.double(), ref, rtol=1e-5, atol=1e-5)


def test_spmm_transposed_matches_dense():
    p, W, mask = make_pattern(seed=1)
    G = torch.randn(N, M).t()      # non-contiguous, as autograd hands it over
    GX = ops.spmm_t(G, W[mask], *p.op_args())
    assert GX.shape == (K, N)
    torch.testing.assert_close(GX.double(), W.double().t() @ G.double(), rtol=1e-5, atol=1e-5)


def test_gradients_match_float64_dense_reference():
    """float32 kernels: dX = W^T dY, dvalues = (dY X^T)[mask], dbias = dY 1."""
    p, W, mask = make_pattern(seed=2)
    values = W[mask].clone().requires_grad_()
    bias = torch.randn(M, requires_grad=True)
    Xrows = torch.randn(N, K, requires_grad=True)
    G = torch.randn(M, N)
    ops.spmm(Xrows.t(), values, bias, *p.op_args()).backward(G)

    v64 = values.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    X64 = Xrows.detach().double().requires_grad_()
    (dense_of(p, v64) @ X64.t() + b64[:, None]).backward(G.double())
    for got, want in ((Xrows.grad, X64.grad), (values.grad, v64.grad), (bias.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_only_requested_gradients_are_computed():
    p, W, mask = make_pattern(seed=4)
    values = W[mask].clone()                       # frozen weights
    Xrows = torch.randn(N, K, requires_grad=True)
    ops.spmm(Xrows.t(), values, None, *p.op_args()).sum().backward()
    assert values.grad is None
    torch.testing.assert_close(Xrows.grad.double(), W.double().sum(0).expand(N, K),
                               rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    """Input, masked-weight and bias gradients by finite differences, in float64.

    gradcheck perturbs inputs through ``.data``, which bypasses the version counter that
    tells a pattern its values changed; ``refresh`` makes every evaluation re-read them."""
    p, W, mask = make_pattern(seed=5, m=6, k=5)
    values = W[mask].double().requires_grad_()
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    X = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def f(X, values, bias):
        p.refresh()
        return ops.spmm(X, values, bias, *p.op_args())

    assert torch.autograd.gradcheck(f, (X, values, bias), eps=1e-6, atol=1e-7)


def test_in_place_value_update_respecialises():
    p, W, mask = make_pattern(seed=6)
    values = W[mask].clone()
    X = torch.randn(K, N)
    Y0 = ops.spmm(X, values, None, *p.op_args())
    with torch.no_grad():
        values.mul_(-2.0)                          # bumps the version counter
    Y1 = ops.spmm(X, values, None, *p.op_args())
    torch.testing.assert_close(Y1, -2.0 * Y0, rtol=1e-5, atol=1e-5)


def test_fake_implementation_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    p, W, mask = make_pattern(seed=7)
    real = (torch.randn(K, 9), W[mask], torch.randn(M, 9))
    with FakeTensorMode() as mode:
        X, v, G, indptr, indices = (mode.from_tensor(t) for t in (*real, *p.op_args()[:2]))
        mask = (indptr, indices, p.key)
        Y = ops.spmm(X, v, None, *mask)
        GX = ops.spmm_t(G, v, *mask)
        GV = ops.spmm_grad_values(G, X, *mask)
    assert (Y.shape, GX.shape, GV.shape) == ((M, 9), (K, 9), (p.nnz,))
    assert Y.dtype == GX.dtype == GV.dtype == torch.float32


def test_opcheck():
    """torch.library's own consistency checks: schema, fake kernel, autograd registration."""
    p, W, mask = make_pattern(seed=8)
    args = (torch.randn(N, K).t(), W[mask].clone().requires_grad_(),
            torch.randn(M, requires_grad=True), *p.op_args())
    torch.library.opcheck(torch.ops.sparsert.spmm.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


def test_bad_arguments_are_named():
    p, W, mask = make_pattern(seed=9)
    with pytest.raises(ValueError, match="X must be"):
        ops.spmm(torch.randn(K + 1, 3), W[mask], None, *p.op_args())
    with pytest.raises(TypeError, match="values are torch.float16"):
        ops.spmm(torch.randn(K, 3), W[mask].half(), None, *p.op_args())
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.spmm(torch.randn(K, 3), W[mask], torch.randn(M + 1), *p.op_args())
    with pytest.raises(ValueError, match="not a sparse pattern key"):
        ops.spmm(torch.randn(K, 3), W[mask], None, *p.op_args()[:2], "0")


def test_plain_cpu_without_interpreter_raises(monkeypatch):
    p, W, mask = make_pattern(seed=10, device="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        ops.spmm(torch.randn(K, 3, device="cpu"), W[mask], None, *p.op_args())


def test_copied_pattern_outlives_original():
    p, W, mask = make_pattern(seed=11)
    q = copy.deepcopy(p)
    assert q.kernel_id != p.kernel_id
    del p
    gc.collect()
    X = torch.randn(K, 4)
    Y = ops.spmm(X, W[mask], None, *q.op_args())
    torch.testing.assert_close(Y.double(), W.double() @ X.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_spmm_and_gradients_on_gpu():
    p, W, mask = make_pattern(seed=12, m=256, k=192, density=0.1, device="cpu")
    values = W[mask].cuda().requires_grad_()
    X = torch.randn(192, 64, device="cuda", requires_grad=True)
    Y = ops.spmm(X, values, None, *p.op_args())
    G = torch.randn_like(Y)
    Y.backward(G)
    Wd = W.cuda().double()
    torch.testing.assert_close(Y.double(), Wd @ X.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(X.grad.double(), Wd.t() @ G.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(values.grad.double(),
                               (G.double() @ X.detach().double().t())[mask.cuda()],
                               rtol=1e-4, atol=1e-4)
