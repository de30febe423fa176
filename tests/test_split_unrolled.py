"""``split_k`` in the unrolled modes: column slices as programs, partial sums fixed up by the
last slice of each (group, tile)."""
import pytest
import torch

from dsl import conv2d, relu
from sparsert_triton import Schedule, sparse_kernel
from sparsert_triton.canonicalise import plan_for
from sparsert_triton.specialise import specialise_unrolled
from sparsert_triton.weights import as_sparse_weight


def _weight(M, K, density, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g, dtype=torch.float64) * (torch.rand(M, K, generator=g) < density)
    return W.to(dtype)


@pytest.mark.parametrize("M,K,N,R,S,mode,dtype", [
    (24, 40, 100, 5, 2, "values", torch.float32),
    (24, 40, 100, 5, 3, "indices", torch.float32),
    (7, 9, 3, 2, 4, "values", torch.float32),      # more slices than some groups' columns
    (6, 50, 40, 6, 16, "values", torch.float64),
    (33, 20, 70, 8, 2, "values", torch.float16),
])
def test_split_matches_float64(device, M, K, N, R, S, mode, dtype):
    W = _weight(M, K, 0.3, dtype=dtype)
    W[1] = 0                                        # an empty row: epilogue of zeros
    b = torch.randn(M, dtype=torch.float64).to(dtype).to(device)
    X = torch.randn(K, N, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64).to(dtype).to(device)
    s = Schedule(mode=mode, rows_per_program=R, block_n=32, split_k=S,
                 max_statements_per_function=40, max_functions_per_kernel=5)
    k = sparse_kernel(lambda W, X, b: relu(W @ X + b), schedule=s).specialize(W)
    Y = k(X, b)
    assert k.last_plan.split_k == S
    ref = torch.relu(W.double() @ X.double().cpu() + b.double().cpu()[:, None])
    tol = {torch.float16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(Y.double().cpu(), ref, rtol=tol, atol=tol)
    assert torch.equal(k(X, b), Y)                  # slice order fixed: same sums every call


def test_split_of_an_all_zero_weight_is_the_epilogue_of_zeros(device):
    W = torch.zeros(9, 12)
    X = torch.randn(12, 40).to(device)
    b = torch.randn(9).to(device)
    k = sparse_kernel(lambda W, X, b: W @ X + b,
                      schedule=Schedule(mode="values", rows_per_program=4, split_k=2)).specialize(W)
    torch.testing.assert_close(k(X, b).cpu(), b.cpu()[:, None].expand(9, 40))


def test_split_convolution_matches_float64(device):
    g = torch.Generator().manual_seed(2)
    W = torch.randn(10, 6, 3, 3, generator=g) * (torch.rand(10, 6, 3, 3, generator=g) < 0.25)
    X = torch.randn(2, 6, 9, 7, generator=g).to(device)
    for pad in (True, False):
        s = Schedule(mode="values", rows_per_program=4, block_n=32, split_k=3, pad_input=pad)
        Y = sparse_kernel(lambda W, X: conv2d(W, X, stride=2, padding=1),
                          schedule=s).specialize(W)(X)
        ref = torch.nn.functional.conv2d(X.double().cpu(), W.double(), None, 2, 1)
        torch.testing.assert_close(Y.double().cpu(), ref, rtol=1e-5, atol=1e-5)


def test_slices_partition_each_groups_nonzeros_with_balanced_work():
    w = as_sparse_weight(_weight(32, 300, 0.2))
    plan = plan_for(Schedule(mode="values", rows_per_program=16, split_k=4,
                             max_statements_per_function=100000), w, 64, "float32")
    lay = specialise_unrolled(w, plan)
    seen = sorted(int(i) for i in lay.pack_order)
    assert seen == list(range(w.nnz))               # every nonzero in exactly one slice
    for g in lay.groups:
        assert g.split == 4
        work = [sum(len(e) + 1 for p in g.parts if p.slice == s for _, e in p.columns)
                for s in range(4)]
        assert max(work) <= 1.25 * sum(work) / 4 + 2, work
        cols = [{c for p in g.parts if p.slice == s for c, _ in p.columns} for s in range(4)]
        assert all(max(cols[s]) < min(cols[s + 1]) for s in range(3))   # contiguous slices


def test_split_is_validated_and_keeps_the_one_slice_code(device):
    w = as_sparse_weight(torch.eye(8))
    with pytest.raises(ValueError, match="1..16"):
        plan_for(Schedule(mode="values", split_k=17), w, 16, "float32")
    assert plan_for(Schedule(mode="values", split_k=3), w, 16, "float32").num_warps == 1
    W = _weight(16, 20, 0.3)
    one = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="values")).specialize(W)
    two = sparse_kernel(lambda W, X: W @ X,
                        schedule=Schedule(mode="values", split_k=2)).specialize(W)
    X = torch.randn(20, 40).to(device)
    one(X), two(X)
    assert "WS" not in one._last.source and "atomic_add" not in one._last.source
    assert "atomic_add" in two._last.source and one._last.key != two._last.key


@pytest.mark.gpu
def test_split_on_the_gpu_is_right_and_repeatable_under_contention():
    """Many (group, tile) fix-ups racing on one GPU: every call matches float64 and every
    call gives the same bits (the fix-up adds the slices in one order, whoever arrives last)."""
    W = _weight(256, 512, 0.1, seed=3)
    X = torch.randn(512, 4096, generator=torch.Generator().manual_seed(4)).cuda()
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(
        mode="values", rows_per_program=16, block_n=64, num_warps=2, split_k=4,
        max_statements_per_function=16384, max_functions_per_kernel=64)).specialize(W)
    first = k(X)
    ref = W.double() @ X.double().cpu()
    torch.testing.assert_close(first.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    for _ in range(20):
        assert torch.equal(k(X), first)
