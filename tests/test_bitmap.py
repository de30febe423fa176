"""The bitmap mode (a bit per weight position plus each tile's packed values, decoded in
registers): its layout, results against float64 for every dtype, epilogue, K range and odd
size, multiply-adds and tl.dot, its NaN rule, bad schedules and the default's choice
(strided and aliased operands, new values, an all-zero weight and a convolution's refusal:
``test_blocks.py``, for both row-block modes)."""
import numpy as np
import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.bitmap import specialise_bitmap
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.weights import as_sparse_weight

from test_blocks import TOL, _fc, _rel, _weight   # what both row-block modes' tests share

pytestmark = pytest.mark.usefixtures("on_test_device")


def _decode(L, R, T, M, K, values):
    """The dense weight a layout describes, decoded as the kernel does (bit, popc, offsets)."""
    W = T // 32
    nb = -(-M // R)
    D = np.zeros((nb * R, L.k_tiles * T))
    bits = L.bits.view(np.uint32).reshape(nb * L.k_tiles, R, W)
    for tile in range(nb * L.k_tiles):
        b, tk = divmod(tile, L.k_tiles)
        for i in range(R):
            for w in range(W):
                word = int(bits[tile, i, w])
                for j in range(32):
                    if word >> j & 1:
                        rank = bin(word & ((1 << j) - 1)).count("1")
                        at = L.tbase[tile] + L.roff[tile * R + i] + L.woff[(tile * R + i) * W + w]
                        D[b * R + i, tk * T + w * 32 + j] = values[L.value_index[at + rank]]
    return D[:M, :K]


@pytest.mark.parametrize("R,T", [(16, 256), (4, 64), (1, 32)])
def test_layout_decodes_to_the_weight(R, T):
    W = _weight(37, 300, 0.3, torch.float32, empty_rows=(5, 36))
    w = as_sparse_weight(W)
    L = specialise_bitmap(w, plan_for(Schedule(mode="bitmap", rows_per_program=R, chunk=T),
                                      w, 1, "float16"))
    assert L.k_tiles == -(-300 // T) and L.value_index.shape == (w.nnz,)
    assert L.woff.dtype == np.uint8 and L.roff.dtype == np.int16
    assert np.array_equal(_decode(L, R, T, 37, 300, w.values), W.double().cpu().numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("M,K,N,split", [(37, 300, 1, 1), (37, 300, 5, 2), (9, 70, 20, 1),
                                         (40, 520, 17, 3)])
def test_matches_float64(dtype, M, K, N, split):
    W = _weight(M, K, 0.4, dtype, seed=M + N, empty_rows=(1,))
    k = sparse_kernel(_fc).specialize(W, Schedule(mode="bitmap", split_k=split))
    X = torch.randn(K, N).to(dtype)
    bias = torch.randn(M).to(dtype)
    Y = k(X, bias)
    plan = k.last_plan
    assert plan.mode == "bitmap" and plan.split_k == split
    # tl.dot of the decoded tiles for >= 2 half-precision columns, multiply-adds otherwise
    assert plan.use_dot == (dtype == torch.float16 and N >= 2)
    assert _rel(Y, k.reference(X, bias)) < TOL[dtype]


@pytest.mark.parametrize("use_dot", [False, True])
def test_nan_in_x_reaches_its_whole_column(use_dot):
    """The documented rule: tiles are multiplied densely (zeros included), so NaN in X[k, n]
    reaches every output of column n, as in a dense W @ X; other columns are unaffected."""
    W = torch.ones(16, 40, dtype=torch.float16)
    W[1:, 0] = 0
    X = torch.ones(40, 17, dtype=torch.float16)
    X[0, 0] = float("nan")
    Y = sparse_kernel(lambda W, X: W @ X).specialize(
        W, Schedule(mode="bitmap", rows_per_program=16, chunk=32, use_dot=use_dot))(X)
    assert torch.isnan(Y[:, 0]).all() and not torch.isnan(Y[:, 1:]).any()


@pytest.mark.parametrize("bad,msg", [(dict(rows_per_program=3), "power of two"),
                                     (dict(chunk=48), "chunk"),
                                     (dict(chunk=512), "chunk"),
                                     (dict(rows_per_program=16, chunk=256, block_n=8),
                                      "accumulator"),
                                     (dict(use_dot=True, rows_per_program=8), "use_dot"),
                                     (dict(row_order="nnz"), "given"),
                                     (dict(prefetch_tail=True), "prefetch_tail")])
def test_bad_bitmap_schedules_are_named(bad, msg):
    w = as_sparse_weight(_weight(8, 8, 0.5, torch.float16))
    with pytest.raises(ValueError, match=msg):
        plan_for(Schedule(mode="bitmap", **bad), w, 16, "float16")


def test_default_takes_bitmap_from_16_columns_where_it_beat_blocks():
    """Among the blocks mode's cases, 'auto' takes the bitmap mode at 16 columns from 15%
    density and at any density above 16 columns (H100 crossovers, ``bitmap_by_default``);
    the blocks mode below 16 columns and at 16 columns and 10% density; neither in float32."""
    sparse = as_sparse_weight(_weight(256, 512, 0.1, torch.float16))
    dense = as_sparse_weight(_weight(256, 512, 0.5, torch.float16))
    mode = lambda w, N, dt="float16": plan_for(Schedule(), w, N, dt, interpreter=False).mode
    assert [mode(dense, N) for N in (1, 4, 15, 16, 64)] == ["blocks"] * 3 + ["bitmap"] * 2
    assert [mode(sparse, N) for N in (1, 16, 17, 64)] == ["blocks"] * 2 + ["bitmap"] * 2
    assert mode(dense, 65) == mode(sparse, 65) == "table"
    assert mode(dense, 16, "bfloat16") == "bitmap" and mode(dense, 16, "float32") == "table"
    # its default tiles on a GPU: tl.dot of 64 x 128 tiles to 32 columns, 32 x 64 at 64
    p16, p64 = (plan_for(Schedule(), dense, N, "float16", interpreter=False) for N in (16, 64))
    assert (p16.use_dot, p16.rows_per_program, p16.chunk, p16.block_n) == (True, 64, 128, 16)
    assert (p64.use_dot, p64.rows_per_program, p64.chunk, p64.block_n) == (True, 32, 64, 64)
    p1 = plan_for(Schedule(mode="bitmap"), dense, 1, "float16", interpreter=False)
    assert (p1.use_dot, p1.rows_per_program, p1.chunk, p1.block_n) == (False, 8, 256, 1)
