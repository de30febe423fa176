"""Direct sparse convolution against float64 torch.nn.functional.conv2d."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given

from dsl import TraceError, conv2d, relu, trace
from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.conv import hwc_to_chw, tap_profile
from sparsert_triton.dlmc import read_smtx
from sparsert_triton.testing import (NAN_WEIGHT, assert_nan_reaches_exactly_its_readers,
                                     check_conv_case, conv_cases)

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
DATA = Path(__file__).resolve().parent.parent / "data" / "bottleneck_2_block_group1_1_1.smtx.gz"


@given(case=conv_cases(modes=["values", "indices"]))
def test_conv_unrolled(case, device):
    check_conv_case(case, device)


@given(case=conv_cases(modes=["table"]))
def test_conv_table(case, device):
    check_conv_case(case, device)


def test_conv_rejections():
    with pytest.raises(TraceError, match="groups=1"):
        trace(lambda W, X: conv2d(W, X, groups=2))
    with pytest.raises(TraceError, match="stride 1"):
        trace(lambda W, X: conv2d(W, X, stride=2, padding="same"))
    with pytest.raises(TraceError, match="only one product"):
        trace(lambda W, X: conv2d(W, X) + W @ X)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        k(torch.randn(3, 5, 5).to(DEV))
    with pytest.raises(ValueError, match="channels"):
        k(torch.randn(1, 2, 5, 5).to(DEV))
    small = sparse_kernel(lambda W, X: conv2d(W, X)).specialize(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        small(torch.randn(1, 3, 2, 2).to(DEV))
    with pytest.raises(ValueError, match="4-D"):
        sparse_kernel(lambda W, X: conv2d(W, X)).specialize(torch.randn(4, 27))
    with pytest.raises(ValueError, match="odd effective kernel"):
        sparse_kernel(lambda W, X: conv2d(W, X, padding="same")).specialize(torch.randn(4, 3, 2, 2))
    bias_k = sparse_kernel(lambda W, X, b: conv2d(W, X) + b).specialize(torch.randn(4, 3, 1, 1))
    with pytest.raises(ValueError, match="b has shape"):
        bias_k(torch.randn(1, 3, 5, 5).to(DEV), torch.randn(5).to(DEV))


def test_one_by_one_conv_is_the_matmul():
    """A 1x1 convolution equals W @ X with X viewed as C_in x (B H W)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 6, generator=g) * (torch.rand(8, 6, generator=g) < 0.4)
    X = torch.randn(2, 6, 5, 7, generator=g).to(DEV)
    Yc = sparse_kernel(lambda W, X: conv2d(W, X)).specialize(W[:, :, None, None])(X)
    Ym = sparse_kernel(lambda W, X: W @ X).specialize(W)(X.permute(1, 0, 2, 3).reshape(6, -1))
    torch.testing.assert_close(Yc, Ym.reshape(8, 2, 5, 7).permute(1, 0, 2, 3), rtol=1e-5, atol=1e-5)


def test_dlmc_conv_column_order_is_hwc():
    """DLMC 3x3 matrices list columns as (dy, dx, c_in): pruning keeps the centre tap densest
    and the corners sparsest, which shows only when the columns are read in that order."""
    p = read_smtx(DATA)
    C_in = p.K // 9
    hwc = tap_profile(p.indices, C_in, 3, 3, "hwc")
    chw = tap_profile(p.indices, C_in, 3, 3, "chw")
    assert hwc[1, 1] == hwc.max() and hwc[1, 1] > 1.5 * hwc[[0, 0, 2, 2], [0, 2, 0, 2]].max()
    assert chw.max() < 1.25 * chw.min()
    # the conversion to PyTorch's order moves each nonzero to the same (c_in, dy, dx)
    k = hwc_to_chw(np.array([0, C_in - 1, 4 * C_in + 2]), C_in, 3, 3)
    assert list(k) == [0, (C_in - 1) * 9, 2 * 9 + 4]


def test_dlmc_matrix_as_convolution():
    p = read_smtx(DATA)
    w = p.with_values(seed=0)
    k = sparse_kernel(lambda W, X, b: relu(conv2d(W, X, padding=1) + b),
                      schedule=Schedule(mode="table")).specialize(w, kernel_size=(p.K // 9, 3, 3),
                                                                  order="hwc")
    X = torch.randn(1, p.K // 9, 6, 5).to(DEV)
    b = torch.randn(p.M).to(DEV)
    Y = k(X, b)
    torch.testing.assert_close(Y.cpu().double(), k.reference(X, b), rtol=1e-4, atol=1e-4)


def test_tap_segments_layout():
    """With tap segments each row slot has one segment per kernel tap, holding exactly that
    tap's nonzeros (input channels ascending, values in step); without, the CSR row."""
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.compiler.conv import conv_weight
    from sparsert_triton.compiler.specialise import specialise
    g = torch.Generator().manual_seed(3)
    W4 = torch.randn(5, 4, 3, 3, generator=g) * (torch.rand(5, 4, 3, 3, generator=g) < 0.4)
    w, _ = conv_weight(W4)
    from dataclasses import replace
    with_taps = plan_for(Schedule(mode="table", chunk=2, conv_input="segments"), w,
                         64, "float32", conv=True)
    assert with_taps.tap_segments
    for taps in (True, False):
        plan = with_taps if taps else replace(with_taps, tap_segments=False)
        t = specialise(w, plan, 9)
        for slot, row in enumerate(t.rows):
            if row < 0:
                continue
            per = 9 if taps else 1
            for tap in range(per):
                s, n = t.starts[slot * per + tap], t.lengths[slot * per + tap]
                vi = t.value_index[s:s + n]
                k = w.indices[vi]
                Wr = W4[row].reshape(4, 9).numpy()       # (c_in, tap)
                if taps:
                    c_in = np.nonzero(Wr[:, tap])[0]
                    assert list(t.cols[s:s + n]) == list(c_in) and list(k % 9) == [tap] * n
                    assert np.allclose(w.values[vi], Wr[c_in, tap])
                else:
                    assert list(t.cols[s:s + n]) == list(np.nonzero(Wr.reshape(-1))[0])


def test_nan_reaches_exactly_the_outputs_that_read_it():
    """The tap kernel points out-of-image lanes at X[0, c, 0, 0] (the padded kernel, lanes past
    N at the padded copy's start); a NaN there must still reach only the outputs whose window
    covers it with a nonzero weight (padding reads zeros)."""
    for pad, split in ((False, 1), (True, 1), (True, 2), (False, 4)):
        k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                          schedule=Schedule(mode="table", chunk=2, block_n=16, split_k=split,
                                            conv_input="padded" if pad else "segments")
                          ).specialize(NAN_WEIGHT)
        assert_nan_reaches_exactly_its_readers(k, DEV)
        assert k.last_plan.tap_segments == (not pad and split == 1)


def test_padded_offsets_address_the_unfolded_input():
    """ConvGeometry.padded_offsets: output (oy, ox) of an image reads, for column k,
    Xp.flat[oy*sh*Wp + ox*sw + offsets[k]]; that is exactly F.unfold's (k, position) entry."""
    from sparsert_triton.compiler.conv import ConvGeometry
    g = torch.Generator().manual_seed(4)
    for stride, padding, dilation, H, W in (((1, 1), (1, 1), (1, 1), 6, 7),
                                             ((2, 1), (0, 2), (2, 1), 9, 8),
                                             ((1, 2), (2, 0), (1, 2), 7, 11)):
        geom = ConvGeometry(3, 3, 2, stride, padding, dilation)
        X = torch.randn(3, H, W, generator=g, dtype=torch.float64)
        Hp, Wp = geom.padded_size(H, W)
        Xp = torch.nn.functional.pad(X, (padding[1],) * 2 + (padding[0],) * 2).reshape(-1)
        cols = torch.nn.functional.unfold(X[None], (3, 2), dilation, padding, stride)[0]
        Ho, Wo = geom.output_size(H, W)
        off = torch.from_numpy(geom.padded_offsets(H, W))
        oy, ox = torch.meshgrid(torch.arange(Ho), torch.arange(Wo), indexing="ij")
        base = (oy * stride[0] * Wp + ox * stride[1]).reshape(-1)
        assert torch.equal(Xp[off[:, None] + base[None, :]], cols)


def _pad_kernel(W4, stride=1, padding=1, **schedule):
    schedule = {"mode": "table", **schedule}
    return sparse_kernel(lambda W, X: conv2d(W, X, stride=stride, padding=padding),
                         schedule=Schedule(conv_input="padded", **schedule)).specialize(W4)


def test_pad_input_layout_is_one_segment_of_offsets_per_row():
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.compiler.conv import conv_weight
    from sparsert_triton.compiler.specialise import specialise
    g = torch.Generator().manual_seed(5)
    W4 = torch.randn(5, 4, 3, 3, generator=g) * (torch.rand(5, 4, 3, 3, generator=g) < 0.4)
    k = _pad_kernel(W4, chunk=2)
    w, _ = conv_weight(W4)
    plan = plan_for(Schedule(mode="table", chunk=2, conv_input="padded"), w, 64, "float32",
                    conv=True)
    assert plan.pad_input and not plan.tap_segments
    off = k.conv.padded_offsets(6, 5)
    t = specialise(w, plan, 9, off)
    for slot, row in enumerate(t.rows):
        if row >= 0:
            s, n = t.starts[slot], t.lengths[slot]
            assert n == w.row_nnz[row]
            assert list(t.cols[s:s + n]) == list(off[w.indices[t.value_index[s:s + n]]])


@pytest.mark.parametrize("mode", ["table", "values", "indices"])
def test_pad_input_across_input_sizes_strides_and_layouts(mode):
    """The padded kernel depends on the input's size: one kernel called on several sizes, on
    strided and channels-last X, with padding 0 (no copy for a contiguous X) and 2."""
    g = torch.Generator().manual_seed(6)
    W4 = torch.randn(6, 3, 3, 3, generator=g) * (torch.rand(6, 3, 3, 3, generator=g) < 0.5)
    extra = (dict(chunk=4, prefetch_tail=True) if mode == "table" else
             dict(rows_per_program=4, max_statements_per_function=20))
    for stride, padding in ((1, 1), (2, 0), (1, 2)):
        k = _pad_kernel(W4, stride, padding, block_n=16, mode=mode, **extra)
        for shape in ((2, 3, 7, 9), (1, 3, 5, 5), (3, 3, 8, 6)):
            X = torch.randn(*shape, generator=g).to(DEV)
            for Xc in (X, X.to(memory_format=torch.channels_last), X[:, :, :, 1:]):
                Y = k(Xc)
                assert k.last_plan.pad_input
                torch.testing.assert_close(Y.cpu().double(), k.reference(Xc), rtol=1e-5,
                                           atol=1e-5)


def test_pad_input_rejections_and_what_ignores_it():
    W4 = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="conv_input='padded' applies to the one-row table "
                                         "kernel and the unrolled modes, not use_dot"):
        _pad_kernel(W4, use_dot=True, rows_per_program=16, chunk=16,
                    block_n=16)(torch.randn(1, 3, 5, 5).to(DEV))
    with pytest.raises(ValueError, match="spatial size"):
        _pad_kernel(W4).source      # nothing called yet: no input size to specialise to
    with pytest.raises(ValueError, match="conv_input"):
        Schedule(conv_input="yes")
    # W @ X has no input to pad: the field is ignored
    mm = sparse_kernel(lambda W, X: W @ X,
                       schedule=Schedule(mode="table", conv_input="padded")).specialize(
        torch.randn(4, 6))
    X = torch.randn(6, 10).to(DEV)
    torch.testing.assert_close(mm(X).cpu().double(), mm.reference(X), rtol=1e-5, atol=1e-5)
    assert not mm.last_plan.pad_input


def test_pad_input_refuses_a_padded_copy_past_32_bit_offsets(monkeypatch):
    """The padded copy is addressed with 32-bit offsets: one too large is refused by name."""
    import sparsert_triton.api as api
    k = _pad_kernel(torch.randn(4, 3, 3, 3))
    X = torch.randn(2, 3, 5, 5).to(DEV)
    monkeypatch.setattr(api, "INT32_MAX", 2 * 3 * 7 * 7 - 1)    # the copy has 2*3*7*7 elements
    with pytest.raises(ValueError, match="X padded to"):
        k(X)
    monkeypatch.setattr(api, "INT32_MAX", 2 * 3 * 7 * 7)
    torch.testing.assert_close(k(X).cpu().double(), k.reference(X), rtol=1e-5, atol=1e-5)


def test_zero_pad_matches_torch_pad():
    """The one-kernel padded copy equals F.pad for any memory layout, padding and tile edge
    (widths below, at and above one 256-column tile; NaN and inf copied as they are)."""
    from sparsert_triton.runtime.padding import zero_pad
    g = torch.Generator().manual_seed(8)
    for shape, (ph, pw) in (((2, 3, 5, 7), (1, 1)), ((1, 2, 4, 300), (2, 0)),
                            ((3, 1, 9, 254), (0, 1)), ((1, 1, 1, 1), (3, 2))):
        X = torch.randn(*shape, generator=g)
        X[0, 0, 0, 0] = float("nan")
        X.view(-1)[-1] = float("inf")
        for Xc in (X, X.to(memory_format=torch.channels_last), X.transpose(2, 3)):
            Xd = Xc.to(DEV)
            got = zero_pad(Xd, ph, pw)
            want = torch.nn.functional.pad(Xd, (pw, pw, ph, ph))
            assert got.is_contiguous() and got.shape == want.shape
            assert torch.equal(got.cpu().nan_to_num(), want.cpu().nan_to_num())
            assert torch.equal(got.isnan().cpu(), want.isnan().cpu())
