"""The one-row table kernel with X one step ahead (``prefetch_x``): the columns and values two
chunks ahead, the X rows one chunk ahead, each prefetched load masked to its segment.
Reference: float64 ``torch.matmul`` / ``conv2d`` on the masked dense weight."""
import os

import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.canonicalise import plan_for
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


@pytest.mark.parametrize("conv_path", [dict(pad_input=True), dict(tap_masks=True),
                                       dict(tap_segments=True),
                                       dict(pad_input=False, tap_segments=False)])
def test_convolutions_on_every_table_path(conv_path):
    """The padded copy, tap masks, tap segments and the decoded (c_in, tap) order; strides,
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
    for bad in (dict(prefetch_tail=False), dict(split_k=2, prefetch_tail=False),
                dict(pack_nonzeros=True), dict(prefetch=False)):
        with pytest.raises(ValueError, match="prefetch"):
            plan_for(Schedule(**{**TABLE, **bad}), w, 64, "float32")
    with pytest.raises(ValueError, match="prefetch_x"):
        Schedule(prefetch_x="yes")
    from sparsert_triton.specialise import specialise_table
    one = specialise_table(w, plan_for(Schedule(mode="table", chunk=4), w, 64, "float32"))
    two = specialise_table(w, on)
    assert len(two.cols) - len(one.cols) == 8 and len(one.cols) == w.nnz + 4


def test_few_programs_default_for_convolutions():
    """A convolution's one-row table kernel of at most FEW_PROGRAMS programs (rows x column
    tiles) resolves 'auto' to the padded copy, chunks of 16 and prefetch_x (with tap masks
    asked for: masks, chunks of 16, prefetch_x); one program more, or an explicit choice that
    excludes it, keeps the tap-mask default. The default kernel of a small convolution
    matches float64 conv2d."""
    from sparsert_triton.canonicalise import FEW_PROGRAMS
    from sparsert_triton.conv import conv_weight
    w, _ = conv_weight(torch.randn(4, 3, 3, 3))
    edge = FEW_PROGRAMS // 4 * 64                     # 4 rows x 256 tiles of 64 columns

    def plan(N, **s):
        return plan_for(Schedule(mode="table", **s), w, N, "float32", conv=True,
                        tap_masks_fit=True)
    few, many = plan(edge), plan(edge + 1)
    assert few.pad_input and not few.tap_masks and few.prefetch_x and few.chunk == 16
    assert few.prefetch_tail and few.block_n == 64
    assert many.tap_masks and not many.pad_input and not many.prefetch_x and many.chunk == 8
    masks = plan(edge, tap_masks=True)
    assert masks.tap_masks and masks.prefetch_x and masks.chunk == 16
    assert not plan(edge // 2 + 1, block_n=32).prefetch_x      # 4 x 129 x 2 tiles of 32
    assert plan(edge // 2, block_n=32).prefetch_x
    for s in (dict(prefetch_x=False), dict(split_k=2), dict(pack_nonzeros=True),
              dict(tap_segments=True), dict(prefetch_tail=False)):
        p = plan(64, **s)
        assert not p.prefetch_x, s
    off = plan(64, prefetch_x=False)
    assert off.tap_masks and off.chunk == 8
    # W @ X keeps its defaults
    assert not plan_for(Schedule(mode="table"), w, 64, "float32").prefetch_x

    g = torch.Generator().manual_seed(31)
    W4 = masked_conv_weight(g, 6, 5, 3, 3, 0.3)
    X = torch.randn(2, 5, 9, 7, generator=g).to(DEV)
    k = conv_kernel(W4, Schedule(mode="table", block_n=16), padding=1)
    Y = k(X)
    p = k._last.plan
    assert p.prefetch_x and p.pad_input and p.chunk == 16
    torch.testing.assert_close(Y.cpu().double(), k.reference(X), rtol=1e-5, atol=1e-5)
