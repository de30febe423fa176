"""The one-row table kernel with X one step ahead (``prefetch_x``): the columns and values two
chunks ahead, the X rows one chunk ahead, each prefetched load masked to its segment.
Reference: float64 ``torch.matmul`` / ``conv2d`` on the masked dense weight."""
import os

import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.testing import (NAN_WEIGHT, assert_nan_reaches_exactly_its_readers,
                                     conv_kernel, masked_conv_weight)
from sparsert_triton.weights import as_sparse_weight

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
TABLE = dict(mode="table", prefetch_tail=True, prefetch_x=True)


def _weight(g, M, K, density, dtype=torch.float32):
    W = torch.randn(M, K, generator=g, dtype=torch.float64) * (torch.rand(M, K, generator=g)
                                                               < density)
    W[1] = 0.0                                   # an empty row
    W[2, : K // 2] = 0.0                         # a short row
    return W.to(dtype)


@pytest.mark.parametrize("chunk", [1, 2, 4, 8])
def test_matmul_rows_of_every_length(chunk):
    """Rows shorter than a chunk, exactly a chunk, several chunks and a tail, an empty row;
    N not a multiple of the tile; float32, float16 and float64."""
    g = torch.Generator().manual_seed(chunk)
    for dtype, M, K, N, density, tol in ((torch.float32, 13, 37, 45, 0.3, 1e-5),
                                         (torch.float16, 9, 64, 33, 0.5, 2e-2),
                                         (torch.float64, 7, 20, 17, 0.9, 1e-12)):
        W = _weight(g, M, K, density, dtype)
        k = sparse_kernel(lambda W, X: W @ X,
                          schedule=Schedule(**TABLE, chunk=chunk, block_n=16)).specialize(W)
        X = torch.randn(K, N, generator=g, dtype=torch.float64).to(dtype).to(DEV)
        Y = k(X)
        assert k.last_plan.prefetch_x
        torch.testing.assert_close(Y.cpu().double(), k.reference(X), rtol=tol, atol=tol)


def test_loads_past_a_segment_read_nothing():
    """A row's prefetched X rows past its segment belong to the next row (or the tables'
    padding): an inf there must not reach it (x * 0 would be NaN)."""
    W = torch.zeros(4, 12)
    W[0, 0] = 1.0                                # a tail of 1 with chunk 4: the tail's
    W[1, 5] = 2.0                                # other steps read the next row's entries
    W[3, [0, 1, 2, 3, 4, 6]] = 1.0
    X = torch.randn(12, 20)
    X[5] = float("inf")
    X[7:] = float("nan")                         # read by no row
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(**TABLE, chunk=4)).specialize(W)
    Y = k(X.to(DEV)).cpu().double()
    ref = k.reference(torch.nan_to_num(X, 0.0, 0.0, 0.0))   # rows 0, 2, 3 read finite X only
    assert torch.isinf(Y[1]).all()
    keep = torch.tensor([0, 2, 3])
    assert torch.isfinite(Y[keep]).all()
    torch.testing.assert_close(Y[keep], ref[keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv_path", [dict(conv_input="padded"), dict(conv_input="masked"),
                                       dict(conv_input="segments")])
def test_convolutions_on_every_table_path(conv_path):
    """The padded copy, tap masks and tap segments (the three conv_input forms); strides,
    padding and odd sizes; NaN at one input reaches exactly its readers."""
    g = torch.Generator().manual_seed(31)
    for stride, padding, shape in (((1, 1), 1, (2, 5, 7, 9)), ((2, 2), 1, (1, 5, 8, 5)),
                                   ((1, 1), 0, (2, 5, 6, 6))):
        W4 = masked_conv_weight(g, 6, 5, 3, 3, 0.4)
        k = conv_kernel(W4, Schedule(**TABLE, chunk=4, block_n=16, **conv_path), stride,
                        padding)
        X = torch.randn(*shape, generator=g).to(DEV)
        Y = k(X)
        assert k._last.plan.prefetch_x
        torch.testing.assert_close(Y.cpu().double(), k.reference(X), rtol=1e-5, atol=1e-5)
    assert_nan_reaches_exactly_its_readers(
        conv_kernel(NAN_WEIGHT, Schedule(**TABLE, chunk=2, **conv_path)), DEV)


def test_resolution_rejections_and_table_padding():
    w = as_sparse_weight(torch.randn(8, 16) * (torch.rand(8, 16) < 0.5))
    assert not plan_for(Schedule(mode="table"), w, 64, "float32").prefetch_x
    on = plan_for(Schedule(**TABLE, chunk=4), w, 64, "float32")
    assert on.prefetch_x and on.prefetch and on.prefetch_tail
    for bad in (dict(prefetch_tail=False), dict(split_k=2, prefetch_tail=False)):
        with pytest.raises(ValueError, match="prefetch"):
            plan_for(Schedule(**{**TABLE, **bad}), w, 64, "float32")
    with pytest.raises(ValueError, match="prefetch_x"):
        Schedule(prefetch_x="yes")
    from sparsert_triton.compiler.specialise import specialise_table
    one = specialise_table(w, plan_for(Schedule(mode="table", chunk=4), w, 64, "float32"))
    two = specialise_table(w, on)
    assert len(two.cols) - len(one.cols) == 8 and len(one.cols) == w.nnz + 4


def test_few_programs_default_for_convolutions():
    """A convolution's one-row table kernel of at most FEW_PROGRAMS programs (rows x column
    tiles) resolves 'auto' to the padded copy, chunks of 16 and prefetch_x (with tap masks
    asked for: masks, chunks of 16, prefetch_x); one program more, or an explicit choice that
    excludes it, keeps the tap-mask default. The default kernel of a small convolution
    matches float64 conv2d."""
    from sparsert_triton.compiler.canonicalise import FEW_PROGRAMS
    from sparsert_triton.compiler.conv import conv_weight
    w, _ = conv_weight(torch.randn(4, 3, 3, 3))
    edge = FEW_PROGRAMS // 4 * 64                     # 4 rows x 256 tiles of 64 columns

    def plan(N, **s):
        return plan_for(Schedule(mode="table", **s), w, N, "float32", conv=True,
                        tap_masks_fit=True)
    few, many = plan(edge), plan(edge + 1)
    assert few.pad_input and not few.tap_masks and few.prefetch_x and few.chunk == 16
    assert few.prefetch_tail and few.block_n == 64
    assert many.tap_masks and not many.pad_input and not many.prefetch_x and many.chunk == 8
    masks = plan(edge, conv_input="masked")
    assert masks.tap_masks and masks.prefetch_x and masks.chunk == 16
    assert not plan(edge // 2 + 1, block_n=32).prefetch_x      # 4 x 129 x 2 tiles of 32
    assert plan(edge // 2, block_n=32).prefetch_x
    for s in (dict(prefetch_x=False), dict(split_k=2),
              dict(conv_input="segments"), dict(prefetch_tail=False)):
        p = plan(64, **s)
        assert not p.prefetch_x, s
    off = plan(64, prefetch_x=False)
    assert off.tap_masks and off.chunk == 8
    # W @ X has its own rule (test_few_programs_default_for_matmuls): rows of < 16 nonzeros
    # on average keep chunks of 8 there
    short = as_sparse_weight(torch.randn(4, 27) * (torch.rand(4, 27) < 0.3))
    assert not plan_for(Schedule(mode="table"), short, 64, "float32").prefetch_x

    g = torch.Generator().manual_seed(31)
    W4 = masked_conv_weight(g, 6, 5, 3, 3, 0.3)
    X = torch.randn(2, 5, 9, 7, generator=g).to(DEV)
    k = conv_kernel(W4, Schedule(mode="table", block_n=16), padding=1)
    Y = k(X)
    p = k._last.plan
    assert p.prefetch_x and p.pad_input and p.chunk == 16
    torch.testing.assert_close(Y.cpu().double(), k.reference(X), rtol=1e-5, atol=1e-5)


def test_few_programs_default_for_matmuls():
    """W @ X in fp32 with the one-row table kernel, at most FEW_PROGRAMS_MATMUL programs and
    rows of at least FEW_MIN_ROW nonzeros on average, resolves 'auto' to chunks of 16, the
    prefetched tail and prefetch_x (half precision only with N <= 64); one program more,
    shorter rows, the unrolled modes or an explicit choice that excludes it keep chunks of 8. The default
    kernel of such a weight matches float64 matmul, empty and short rows included."""
    from sparsert_triton.compiler.canonicalise import FEW_MIN_ROW, FEW_PROGRAMS_MATMUL
    g = torch.Generator().manual_seed(5)
    M, K = 8, 64
    W = torch.randn(M, K, generator=g, dtype=torch.float64)
    W[:, : K - 2 * FEW_MIN_ROW] = 0.0                # 2 * FEW_MIN_ROW nonzeros per row
    w = as_sparse_weight(W.float())
    edge = FEW_PROGRAMS_MATMUL // M * 128            # M rows x 256 tiles of 128 columns

    def plan(N, dtype="float32", weight=w, **s):
        return plan_for(Schedule(**{"mode": "table", **s}), weight, N, dtype)
    few, many = plan(edge), plan(edge + 1)
    assert few.prefetch_x and few.prefetch_tail and few.prefetch and few.chunk == 16
    assert few.block_n == 128
    assert not many.prefetch_x and not many.prefetch_tail and many.chunk == 8
    for half in ("float16", "bfloat16"):    # half precision: only where N fits one tile
        p = plan(65, half, use_dot=False)
        assert not p.prefetch_x and p.chunk == 8, half
        p = plan(64, half, use_dot=False)
        assert p.prefetch_x and p.chunk == 16, half
    Ws = W.clone()
    Ws[:, : K - FEW_MIN_ROW + 1] = 0.0               # FEW_MIN_ROW - 1 nonzeros per row
    assert not plan(64, weight=as_sparse_weight(Ws.float())).prefetch_x
    for s in (dict(prefetch_x=False), dict(split_k=2), dict(prefetch_tail=False),
              dict(mode="values")):
        assert not plan(64, **s).prefetch_x, s
    assert plan(64, chunk=8).prefetch_x and plan(64, chunk=8).chunk == 8   # chunk is kept
    assert plan_for(Schedule(), w, 64, "float32").mode == "values"       # small: unrolled

    # the default kernel (table mode asked for, rows long enough, a small grid)
    W2 = _weight(g, 12, 80, 0.5, torch.float64)
    W2[3] = 0.0
    X = torch.randn(80, 37, generator=g, dtype=torch.float64)
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="table")).specialize(
        W2.float())
    Y = k(X.float().to(DEV))
    p = k.last_plan
    assert p.prefetch_x and p.chunk == 16
    torch.testing.assert_close(Y.cpu().double(), W2 @ X, rtol=1e-5, atol=1e-4)
