"""``persistent``: unrolled kernels on a one-wave grid, each program a run of (group, tile) items."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dsl import conv2d, relu
from sparsert_triton import Schedule, sparse_kernel
from sparsert_triton.launch import persistent_runs


@settings(max_examples=200, deadline=None)
@given(n_sm=st.integers(1, 140), per_sm=st.integers(1, 8), items=st.integers(0, 3000))
def test_runs_cover_every_item_once_in_near_equal_neighbouring_runs(n_sm, per_sm, items):
    runs = persistent_runs(n_sm, per_sm, items)
    assert len(runs) == n_sm * per_sm
    covered = sorted(i for lo, hi in runs for i in range(lo, hi))
    assert covered == list(range(items))                  # each item exactly once
    sizes = [hi - lo for lo, hi in runs]
    assert max(sizes) - min(sizes) <= 1                   # balanced
    for p in range(n_sm * (per_sm - 1)):                  # programs n_sm apart (one SM):
        assert runs[p][1] == runs[p + n_sm][0]            # neighbouring runs


def _weight(M, K, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)


@pytest.mark.parametrize("M,K,N,R,per,mfk", [
    (24, 40, 100, 5, 1, 64),     # 5 groups x 4 tiles over 4 programs (CPU_SMS = 4)
    (24, 40, 100, 5, 3, 2),      # several kernels, 12 programs each
    (7, 9, 3, 2, 8, 64),         # fewer items than programs: most runs empty
    (40, 30, 500, 4, 2, 3),
])
def test_persistent_matmul_matches_float64(device, M, K, N, R, per, mfk):
    W = _weight(M, K, 0.3)
    b = torch.randn(M).to(device)
    X = torch.randn(K, N, generator=torch.Generator().manual_seed(1)).to(device)
    s = Schedule(mode="values", rows_per_program=R, block_n=32, persistent=per,
                 max_functions_per_kernel=mfk)
    Y = sparse_kernel(lambda W, X, b: relu(W @ X + b), schedule=s).specialize(W)(X, b)
    ref = torch.relu(W.double() @ X.double().cpu() + b.double().cpu()[:, None])
    torch.testing.assert_close(Y.double().cpu(), ref, rtol=1e-5, atol=1e-5)


def test_persistent_convolution_matches_float64(device):
    g = torch.Generator().manual_seed(2)
    W = torch.randn(10, 6, 3, 3, generator=g) * (torch.rand(10, 6, 3, 3, generator=g) < 0.2)
    X = torch.randn(2, 6, 9, 7, generator=g).to(device)
    for pad in (True, False):
        s = Schedule(mode="values", rows_per_program=4, block_n=32, persistent=2, pad_input=pad)
        Y = sparse_kernel(lambda W, X: conv2d(W, X, stride=2, padding=1),
                          schedule=s).specialize(W)(X)
        ref = torch.nn.functional.conv2d(X.double().cpu(), W.double(), None, 2, 1)
        torch.testing.assert_close(Y.double().cpu(), ref, rtol=1e-5, atol=1e-5)


def test_persistent_is_validated_and_round_trips():
    from sparsert_triton.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight(torch.eye(8))
    with pytest.raises(ValueError, match="persistent"):
        Schedule(persistent=-1)
    with pytest.raises(ValueError, match="persistent"):
        Schedule(persistent=True)
    for bad, msg in ((Schedule(mode="table", persistent=2), "unrolled modes only"),
                     (Schedule(mode="values", persistent=2, column_programs=2), "column_programs"),
                     (Schedule(mode="values", persistent=33), "<= 32")):
        with pytest.raises(ValueError, match=msg):
            plan_for(bad, w, 16, "float32")
    s = Schedule(mode="values", persistent=3)
    assert eval(repr(s), {"Schedule": Schedule}) == s
    assert plan_for(s, w, 16, "float32").persistent == 3
    assert plan_for(Schedule(mode="values"), w, 16, "float32").persistent == 0


def test_persistent_changes_the_cache_key(device):
    W = _weight(16, 20, 0.3)
    X = torch.randn(20, 40).to(device)
    keys = []
    for per in (0, 2):
        k = sparse_kernel(lambda W, X: W @ X,
                          schedule=Schedule(mode="values", persistent=per)).specialize(W)
        k(X)
        keys.append(k._last.key)
    assert keys[0] != keys[1]
