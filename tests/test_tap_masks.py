"""The one-row table kernel without the padded copy (``conv_input="masked"``, tap masks): each
table entry holds a nonzero's offset into the unpadded X and its kernel tap's bit; each
lane's in-image bits mask the load. Reference: float64 ``torch.nn.functional.conv2d`` on the masked weight."""
import os

import numpy as np
import pytest
import torch

from dsl import Schedule
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.testing import (NAN_WEIGHT, assert_nan_reaches_exactly_its_readers,
                                     conv_kernel, masked_conv_weight)
from sparsert_triton.compiler.conv import ConvGeometry, conv_weight

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _kernel(W4, stride=1, padding=1, dilation=1, epilogue=False, **schedule):
    base = {"mode": "table", "block_n": 16, "conv_input": "masked"}
    return conv_kernel(W4, Schedule(**{**base, **schedule}), stride, padding, dilation, epilogue)


def test_masked_offsets_address_the_unfolded_input():
    """Entry = off * 2**B + 2**tap: output (oy, ox) reads X.flat[oy*sh*W + ox*sw + off] where
    the tap is in the image, which is F.unfold's (k, position) entry; zero padding elsewhere."""
    g = torch.Generator().manual_seed(21)
    for stride, padding, dilation, H, W, kh, kw in (((1, 1), (1, 1), (1, 1), 6, 7, 3, 3),
                                                    ((2, 1), (0, 2), (2, 1), 9, 8, 3, 2),
                                                    ((1, 2), (2, 0), (1, 2), 7, 11, 2, 3)):
        geom = ConvGeometry(3, kh, kw, stride, padding, dilation)
        X = torch.randn(3, H, W, generator=g, dtype=torch.float64)
        cols = torch.nn.functional.unfold(X[None], (kh, kw), dilation, padding, stride)[0]
        Ho, Wo = geom.output_size(H, W)
        e = torch.from_numpy(geom.masked_offsets(H, W))
        B = geom.tap_bits
        off, bit = e >> B, e & ((1 << B) - 1)
        assert ((bit & (bit - 1)) == 0).all() and (bit > 0).all()        # one tap each
        oy, ox = torch.meshgrid(torch.arange(Ho), torch.arange(Wo), indexing="ij")
        oy, ox = oy.reshape(-1), ox.reshape(-1)
        tap = torch.log2(bit.double()).long()
        iy = oy[None, :] * stride[0] - padding[0] + (tap // kw * dilation[0])[:, None]
        ix = ox[None, :] * stride[1] - padding[1] + (tap % kw * dilation[1])[:, None]
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        addr = (oy * stride[0] * W + ox * stride[1])[None, :] + off[:, None]
        got = torch.where(inside, X.reshape(-1)[addr.clamp(0, X.numel() - 1)], 0.0)
        assert torch.equal(got, cols)


def test_tap_masks_across_geometries_layouts_and_schedules():
    """Strides, paddings, dilation, 2x2 and 3x3 kernels, odd sizes, batch, channels-last and
    sliced X (copied to contiguous NCHW), chunk sizes, the prefetched tail, rows split
    over warps; float32, float64 and float16."""
    g = torch.Generator().manual_seed(22)
    geoms = [((1, 1), 1, 1, (3, 3), (2, 5, 7, 9)), ((2, 2), 1, 1, (3, 3), (1, 4, 8, 5)),
             ((1, 2), 2, (2, 1), (3, 2), (3, 3, 9, 7)), ((1, 1), "same", 2, (3, 3), (1, 3, 6, 6)),
             ((1, 1), 0, 1, (2, 2), (2, 5, 4, 3))]
    scheds = [dict(chunk=2), dict(chunk=8, prefetch_tail=True), dict(chunk=4),
              dict(chunk=2, split_k=2, num_warps=2), dict(chunk=1)]
    for (stride, padding, dilation, (kh, kw), shape), extra in zip(geoms * 2, scheds * 2):
        W4 = masked_conv_weight(g, 7, shape[1], kh, kw, 0.4)
        k = _kernel(W4, stride, padding, dilation, **extra)
        X = torch.randn(*shape, generator=g).to(DEV)
        for Xc in (X, X.to(memory_format=torch.channels_last), X[:, :, :, 1:]):
            Y = k(Xc)
            p = k.last_plan
            assert p.tap_masks and not p.pad_input and not p.tap_segments
            torch.testing.assert_close(Y.cpu().double(), k.reference(Xc), rtol=1e-5, atol=1e-5)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float16, 2e-2)):
        W4 = masked_conv_weight(g, 6, 4, 3, 3, 0.5, dtype)
        k = _kernel(W4, epilogue=True, chunk=4)
        X = torch.randn(2, 4, 7, 6, generator=g).to(DEV, dtype)
        b = torch.randn(6, generator=g).to(DEV, dtype)
        torch.testing.assert_close(k(X, b).cpu().double(), k.reference(X, b), rtol=tol,
                                   atol=tol)


def test_tap_masks_empty_rows_all_zero_weight_and_nan():
    g = torch.Generator().manual_seed(23)
    W4 = masked_conv_weight(g, 6, 3, 3, 3, 0.5)
    W4[1] = 0.0
    X = torch.randn(2, 3, 5, 6, generator=g).to(DEV)
    for W in (W4, torch.zeros_like(W4)):
        k = _kernel(W, chunk=2)
        Y = k(X).cpu().double()
        torch.testing.assert_close(Y, k.reference(X), rtol=1e-5, atol=1e-5)
        assert torch.equal(Y[:, 1], torch.zeros_like(Y[:, 1]))
    assert_nan_reaches_exactly_its_readers(_kernel(NAN_WEIGHT, chunk=2), DEV)


def test_tap_masks_resolution_and_rejections():
    w, _ = conv_weight(torch.randn(4, 3, 3, 3))
    p = plan_for(Schedule(mode="table", conv_input="masked"), w, 64, "float32", conv=True)
    assert p.tap_masks and not p.pad_input and not p.tap_segments and p.prefetch_tail
    assert not plan_for(Schedule(mode="table"), w, 64, "float32", conv=True).tap_masks
    assert not plan_for(Schedule(mode="table", conv_input="masked"), w, 64, "float32").tap_masks
    # the unrolled modes read X itself with masked loads for 'masked' and 'segments' alike
    for form in ("masked", "segments"):
        p = plan_for(Schedule(mode="values", conv_input=form), w, 64, "float32", conv=True)
        assert not (p.tap_masks or p.pad_input or p.tap_segments) and p.conv_input == "masked"
    for bad in (1.5, True, "tap_masks"):
        with pytest.raises(ValueError, match="conv_input"):
            Schedule(conv_input=bad)
    big = _kernel(torch.randn(2, 1, 5, 5))           # 25 taps: more than 16 bits
    with pytest.raises(ValueError, match="up to 16 taps"):
        big(torch.randn(1, 1, 6, 6).to(DEV))
    geom = ConvGeometry(512, 3, 3, (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="too large for 32-bit table entries"):
        geom.masked_offsets(100, 100)                # 5.1M elements per image > 2**22
    assert np.abs(geom.masked_offsets(56, 56) >> 9).max() < 2 ** 22


def test_tap_masks_is_the_table_default_where_it_serves_the_input():
    """'auto' resolves to tap masks in a convolution's one-row table kernel when the input's
    size is known and fits (<= 16 taps, 32-bit entries), else to the padded input; explicit
    conv_input ('padded', 'segments') or split_k keep theirs. The default kernel runs without the
    padded copy and matches float64 conv2d. (Grids of at most FEW_PROGRAMS programs take the
    padded copy with prefetch_x instead: test_prefetch_x.py; prefetch_x=False or a large N
    keeps them out of it here.)"""
    w, _ = conv_weight(torch.randn(4, 3, 3, 3))
    N = 64 * 1000          # 4 rows x 1000 column tiles: more than FEW_PROGRAMS
    fit = plan_for(Schedule(mode="table"), w, N, "float32", conv=True, tap_masks_fit=True)
    assert fit.tap_masks and not fit.pad_input and fit.prefetch_tail and fit.chunk == 8
    assert not fit.prefetch_x
    for s in (dict(conv_input="padded"), dict(conv_input="segments"), dict(split_k=2)):
        p = plan_for(Schedule(mode="table", **s), w, N, "float32", conv=True,
                     tap_masks_fit=True)
        assert not p.tap_masks, s
    assert not plan_for(Schedule(mode="table"), w, N, "float32", tap_masks_fit=True).tap_masks
    geom = ConvGeometry(512, 3, 3, (1, 1), (1, 1), (1, 1))
    assert geom.masks_fit(56, 56) and not geom.masks_fit(100, 100)
    assert not ConvGeometry(4, 5, 5, (1, 1), (2, 2), (1, 1)).masks_fit(8, 8)   # 25 taps
    # the extremes of masks_fit are those masked_offsets checks
    for H in (88, 89, 90, 91):
        fits = geom.masks_fit(H, H)
        try:
            geom.masked_offsets(H, H)
            assert fits, H
        except ValueError:
            assert not fits, H

    g = torch.Generator().manual_seed(24)
    X = torch.randn(2, 3, 7, 5, generator=g).to(DEV)
    for W4, masks in ((masked_conv_weight(g, 5, 3, 3, 3, 0.4), True),
                      (masked_conv_weight(g, 5, 3, 5, 5, 0.4), False)):     # 25 taps: padded
        k = conv_kernel(W4, Schedule(mode="table", block_n=16, prefetch_x=False), padding=1)
        Y = k(X)
        assert k._last.plan.tap_masks is masks and k._last.plan.pad_input is not masks
        torch.testing.assert_close(Y.cpu().double(), k.reference(X), rtol=1e-5, atol=1e-5)


def test_padded_and_masked_variants_need_the_input_size():
    """Both kernels are specialised to the input's spatial size: a variant asked for without
    it is refused, naming the schedule field."""
    from sparsert_triton.compiler.plan import Signature
    sig = Signature("float32", "float32", "float32", ())
    W4 = masked_conv_weight(torch.Generator().manual_seed(25), 4, 3, 3, 3, 0.5)
    for form in ("padded", "masked"):
        k = _kernel(W4, conv_input=form)
        with pytest.raises(ValueError, match=f"a conv_input='{form}' convolution kernel is "
                                             "specialised"):
            k.variant(sig, 36, torch.device("cpu"), (108, 36, 6, 1))
