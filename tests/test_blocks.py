"""The blocks mode (row blocks of padded nonzero lists, 16-bit columns, K slices): its layout,
results against float64 for every dtype, epilogue, split and odd size, its NaN contract, the
default rule that picks it, and bad schedules. The calls both row-block modes take alike
(strided and aliased operands, new values, an all-zero weight) run for the bitmap mode too
(its own tests: ``test_bitmap.py``)."""
import math

import numpy as np
import pytest
import torch

from dsl import Schedule, clamp, gelu, relu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.blocks import INT16_COLS, auto_split, specialise_blocks
from sparsert_triton.compiler.canonicalise import blocks_by_default, plan_for
from sparsert_triton.weights import as_sparse_weight

pytestmark = pytest.mark.usefixtures("on_test_device")

TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5, torch.float64: 1e-12}


def _weight(M, K, density, dtype, seed=0, empty_rows=()):
    """A random weight drawn on the CPU (the same on every device), on the test device."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(M, K, generator=g, device="cpu")
         * (torch.rand(M, K, generator=g, device="cpu") < density))
    for r in empty_rows:
        W[r] = 0
    return W.to(dtype).to(torch.get_default_device())


def _rel(Y, ref):
    return ((Y.double().cpu() - ref.cpu()).norm() / max(ref.norm().item(), 1e-30)).item()


def _fc(W, X, bias):
    return relu(W @ X + bias)


def _gelu_res(W, X, scale, residual):
    return clamp(gelu(W @ X * scale), -2.0, None) + residual


def test_layout_holds_every_nonzero_once():
    W = _weight(37, 300, 0.3, torch.float32, empty_rows=(5, 36))
    w = as_sparse_weight(W)
    for order in ("given", "nnz"):
        plan = plan_for(Schedule(mode="blocks", rows_per_program=8, chunk=16, row_order=order),
                        w, 4, "float16")
        L = specialise_blocks(w, plan)
        R, U = 8, 16
        D = np.zeros((37, 300))
        for b in range(L.blocks):
            e = L.base[b] + np.arange(L.steps[b] * R * U)
            i = (e - L.base[b]) // U % R
            rows = L.rows[b * R + i]
            hit = L.value_index[e] >= 0
            assert (rows[hit] >= 0).all() and (L.cols[e][~hit] == -1).all()
            np.add.at(D, (rows[hit], L.cols[e][hit]), w.values[L.value_index[e][hit]])
        assert np.array_equal(D, W.double().cpu().numpy())
        assert L.cols.dtype == np.int16


def test_wide_matrices_use_int32_columns():
    w = as_sparse_weight(torch.sparse_coo_tensor([[0, 1], [5, INT16_COLS + 3]], [1.0, 2.0],
                                                 (2, INT16_COLS + 10)))
    L = specialise_blocks(w, plan_for(Schedule(mode="blocks"), w, 1, "float16"))
    assert L.cols.dtype == np.int32 and int(L.cols.max()) == INT16_COLS + 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("M,K,N,split", [(37, 300, 1, 1), (37, 300, 5, 3), (9, 70, 20, 2),
                                         (64, 33, 70, 1), (5, 1500, 1, 2)])
def test_matches_float64(dtype, M, K, N, split):
    W = _weight(M, K, 0.25, dtype, seed=M + N, empty_rows=(1,))
    k = sparse_kernel(_fc).specialize(W, Schedule(mode="blocks", split_k=split))
    X = torch.randn(K, N).to(dtype)
    bias = torch.randn(M).to(dtype)
    Y = k(X, bias)
    assert k.last_plan.mode == "blocks" and k.last_plan.split_k == split
    assert _rel(Y, k.reference(X, bias)) < TOL[dtype]
    # a second call of the same layout takes the planned path (on a GPU: compiled kernels
    # launched directly, fresh slice workspace and counters): the same result, bit for bit
    for _ in range(2):
        assert torch.equal(k(X, bias), Y)


#: a K-sliced schedule of each row-block mode
SPLIT = {"blocks": Schedule(mode="blocks", rows_per_program=4, chunk=8, split_k=2),
         "bitmap": Schedule(mode="bitmap", rows_per_program=4, chunk=64, split_k=2)}


@pytest.mark.parametrize("mode", sorted(SPLIT))
def test_bfloat16_epilogue_strided_x_and_out(mode):
    W = _weight(24, 100, 0.2, torch.bfloat16, seed=3)
    k = sparse_kernel(_gelu_res).specialize(W, SPLIT[mode])
    X = torch.randn(7, 100).to(torch.bfloat16).t()          # K x N, N not contiguous
    res = torch.randn(7, 24).to(torch.bfloat16).t()
    out = torch.empty(7, 24, dtype=torch.bfloat16).t()
    Y = k(X, 0.5, res, out=out)
    assert Y.data_ptr() == out.data_ptr()
    assert _rel(Y, k.reference(X, 0.5, res)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("mode", sorted(SPLIT))
def test_with_values_reuses_the_mask(mode):
    W = _weight(20, 64, 0.3, torch.float16, seed=5)
    k = sparse_kernel(_fc).specialize(W, Schedule(mode=mode))
    X, bias = torch.randn(64, 3).half(), torch.randn(20).half()
    k(X, bias)
    k2 = k.with_values(torch.from_numpy(k.weight.values * -2.0).half())
    assert _rel(k2(X, bias), k2.reference(X, bias)) < TOL[torch.float16]


@pytest.mark.parametrize("mode", sorted(SPLIT))
def test_all_zero_weight_gives_the_epilogue_of_zero(mode):
    k = sparse_kernel(_fc).specialize(torch.zeros(10, 30, dtype=torch.float16),
                                      Schedule(mode=mode))
    bias = torch.randn(10).half()
    Y = k(torch.randn(30, 2).half(), bias)
    assert torch.equal(Y.cpu(), torch.relu(bias).cpu()[:, None].expand(10, 2))


@pytest.mark.parametrize("split", [1, 2])
def test_nan_in_x_reaches_only_rows_with_that_column(split):
    """The documented contract: NaN or inf in X[k, n] reaches row m only where W[m, k] is
    a nonzero (pad slots mask their loads)."""
    W = torch.ones(16, 16, dtype=torch.float16)
    W[1:, 0] = 0
    X = torch.ones(16, 3, dtype=torch.float16)
    X[0, 0] = float("nan")
    Y = sparse_kernel(lambda W, X: W @ X).specialize(
        W, Schedule(mode="blocks", rows_per_program=4, chunk=4, split_k=split))(X)
    assert torch.isnan(Y[0, 0]) and not torch.isnan(Y[1:, 0]).any()
    assert not torch.isnan(Y[:, 1:]).any()


def test_default_picks_blocks_for_few_half_columns_only():
    w = as_sparse_weight(_weight(256, 512, 0.1, torch.float16))
    assert blocks_by_default(w, 1, "float16") and blocks_by_default(w, 16, "bfloat16")
    assert blocks_by_default(w, 64, "float16") and not blocks_by_default(w, 65, "float16")
    assert not blocks_by_default(w, 1, "float32")
    dense = as_sparse_weight(_weight(256, 512, 0.5, torch.float16))
    assert blocks_by_default(dense, 4, "float16") and blocks_by_default(dense, 16, "float16")
    small = as_sparse_weight(_weight(16, 16, 0.5, torch.float16))
    assert not blocks_by_default(small, 1, "float16")         # unrolled instead
    assert plan_for(Schedule(), w, 1, "float16").mode == "blocks"
    assert plan_for(Schedule(), w, 1, "float32").mode == "table"


def test_one_column_takes_long_steps_of_two_rows():
    """At N = 1 the default block is 2 rows x 256 nonzeros per step (twice the programs of
    4 x 128: faster on 11 of 12 Llama cases, bench/NOTES.md), at N = 2-4 the shorter steps."""
    w = as_sparse_weight(_weight(256, 4096, 0.3, torch.float16))
    one = plan_for(Schedule(), w, 1, "float16")
    assert (one.mode, one.rows_per_program, one.chunk) == ("blocks", 2, 256)
    four = plan_for(Schedule(), w, 4, "float16")
    assert (four.mode, four.rows_per_program, four.chunk) == ("blocks", 4, 128)


def test_auto_split_fills_the_gpu_and_respects_the_steps():
    assert auto_split(1376, 1, 100) == 1
    assert auto_split(512, 1, 100) == 2
    assert auto_split(10, 1, 100) == 16
    assert auto_split(10, 1, 6) == 3
    assert auto_split(10, 1, 1) == 1


@pytest.mark.parametrize("bad,msg", [(dict(rows_per_program=3), "power of two"),
                                     (dict(chunk=512), "chunk"),
                                     (dict(rows_per_program=64, chunk=64, block_n=64),
                                      "accumulator"),
                                     (dict(use_dot=True), "use_dot"),
                                     (dict(prefetch_tail=True), "prefetch_tail")])
def test_bad_blocks_schedules_are_named(bad, msg):
    w = as_sparse_weight(_weight(8, 8, 0.5, torch.float16))
    with pytest.raises(ValueError, match=msg):
        plan_for(Schedule(mode="blocks", **bad), w, 4, "float16")


@pytest.mark.parametrize("mode", ["blocks", "bitmap"])
def test_convolution_refuses_row_block_modes(mode):
    from dsl import conv2d
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(
        torch.ones(2, 2, 3, 3), Schedule(mode=mode))
    with pytest.raises(ValueError, match=f"{mode} mode computes W @ X only"):
        k(torch.ones(1, 2, 4, 4))


def test_the_tuner_searches_blocks_for_few_columns():
    from sparsert_triton.tune import candidate_schedules
    w = as_sparse_weight(_weight(256, 512, 0.1, torch.float16))
    few = candidate_schedules(w, 4, "float16")
    blocks = [s for s in few if s.mode == "blocks"]
    from sparsert_triton.compiler.canonicalise import blocks_shape
    assert few[0].mode == "blocks"
    shapes = [(s.rows_per_program, s.chunk) for s in blocks[1:]]
    assert shapes[0] == blocks_shape(w, 4) and len(set(shapes)) == len(shapes)
    assert {(2, 256), (4, 256), (16, 64), (4, 128), (2, 64), (8, 64)} <= set(shapes)  # winners
    for s in blocks:       # every candidate is a valid plan
        assert plan_for(s, w, 4, "float16").mode == "blocks"
    assert not any(s.mode == "blocks" for s in candidate_schedules(w, 256, "float16"))


def test_default_row_order_sorts_uneven_rows_only():
    """Rows of very different lengths pad every block to its longest: the default sorts them
    (fewer stored entries, the same product); a uniform mask keeps the given order."""
    from sparsert_triton.compiler.blocks import specialise_blocks, stored_entries
    g = torch.Generator().manual_seed(3)
    uneven = torch.randn(64, 300, generator=g)
    uneven[1::2] *= torch.rand(32, 300, generator=g) < 0.05      # every other row sparse
    uneven = uneven.half()
    w = as_sparse_weight(uneven)
    plan = plan_for(Schedule(), w, 1, "float16")
    assert plan.mode == "blocks" and plan.row_order == "nnz"
    R, U = plan.rows_per_program, plan.chunk
    assert (stored_entries(w.row_nnz, R, U, True)
            < 0.9 * stored_entries(w.row_nnz, R, U, False))
    # what the layout stores is what stored_entries counts (+ nothing: no pad step)
    assert specialise_blocks(w, plan).cols.shape[0] == stored_entries(w.row_nnz, R, U, True)
    X = torch.randn(300, 3, generator=g).half()
    Y = sparse_kernel(lambda W, X: W @ X).specialize(uneven)(X)
    torch.testing.assert_close(Y.double(), uneven.double() @ X.double(), rtol=2e-2, atol=2e-2)
    uniform = as_sparse_weight(_weight(512, 4096, 0.5, torch.float16))   # ~2% less sorted
    assert plan_for(Schedule(), uniform, 1, "float16").row_order == "given"
