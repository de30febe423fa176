"""Unrolled convolutions without the padded copy (``tap_pointers``): per kernel tap one X
pointer per lane, into the image or into a zero buffer, every load unmasked. Reference:
float64 ``torch.nn.functional.conv2d`` on the masked dense weight (``k.reference``)."""
import os

import pytest
import torch

from dsl import Schedule
from sparsert_triton.canonicalise import plan_for
from sparsert_triton.testing import (NAN_WEIGHT, assert_nan_reaches_exactly_its_readers,
                                     conv_kernel, masked_conv_weight)
from sparsert_triton.conv import conv_weight
from sparsert_triton.launch import zero_buffer

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _kernel(W4, stride=1, padding=1, dilation=1, epilogue=False, **schedule):
    base = {"mode": "values", "rows_per_program": 4, "block_n": 16, "tap_pointers": True}
    return conv_kernel(W4, Schedule(**{**base, **schedule}), stride, padding, dilation, epilogue)


@pytest.mark.parametrize("mode", ["values", "indices"])
def test_tap_pointers_across_geometries_layouts_and_dtypes(mode):
    """Strides, paddings (0, 1, 2, 'same'), dilation, kernels of 1x1 to 3x2, odd sizes, batch
    1-3, channels-last and sliced X (a zero buffer sized by X.stride(1))."""
    g = torch.Generator().manual_seed(11)
    cases = [((1, 1), 1, 1, (3, 3), (2, 5, 7, 9), {}),
             ((2, 2), 1, 1, (3, 3), (1, 4, 8, 5), {}),
             ((1, 2), 2, (2, 1), (3, 2), (3, 3, 9, 7), {}),
             ((1, 1), "same", (2, 2), (3, 3), (1, 3, 6, 6), {}),
             ((1, 1), 0, 1, (1, 1), (2, 5, 4, 3), {})]
    for stride, padding, dilation, (kh, kw), shape, extra in cases:
        W4 = masked_conv_weight(g, 7, shape[1], kh, kw, 0.4)
        k = _kernel(W4, stride, padding, dilation, mode=mode, **extra)
        X = torch.randn(*shape, generator=g).to(DEV)
        for Xc in (X, X.to(memory_format=torch.channels_last), X[:, :, :, 1:]):
            Y = k(Xc)
            assert k.last_plan.tap_pointers and not k.last_plan.pad_input
            torch.testing.assert_close(Y.cpu().double(), k.reference(Xc), rtol=1e-5, atol=1e-5)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float16, 2e-2)):
        W4 = masked_conv_weight(g, 6, 4, 3, 3, 0.5, dtype)
        k = _kernel(W4, mode=mode, epilogue=True)
        X = torch.randn(2, 4, 7, 6, generator=g).to(DEV, dtype)
        b = torch.randn(6, generator=g).to(DEV, dtype)
        torch.testing.assert_close(k(X, b).cpu().double(), k.reference(X, b), rtol=tol,
                                   atol=tol)


def test_tap_pointers_empty_rows_and_an_all_zero_weight():
    g = torch.Generator().manual_seed(12)
    W4 = masked_conv_weight(g, 6, 3, 3, 3, 0.5)
    W4[1] = 0.0
    W4[4] = 0.0
    X = torch.randn(2, 3, 5, 6, generator=g).to(DEV)
    for W in (W4, torch.zeros_like(W4)):
        k = _kernel(W)
        Y = k(X).cpu().double()
        torch.testing.assert_close(Y, k.reference(X), rtol=1e-5, atol=1e-5)
        assert torch.equal(Y[:, 1], torch.zeros_like(Y[:, 1]))


def test_nan_reaches_exactly_the_outputs_that_read_it():
    """Off-image taps read the zero buffer, lanes past N too: a NaN in X reaches only the
    outputs whose window holds it with a nonzero weight, with and without tap pointers."""
    for tp in (True, False):
        k = _kernel(NAN_WEIGHT, tap_pointers=tp, rows_per_program=2)
        assert_nan_reaches_exactly_its_readers(k, DEV)
        assert k.last_plan.tap_pointers == tp


def test_default_and_rejections():
    """Auto: off (masked loads; 5-11% slower than the padded copy at batch 8 on the H100); on
    when asked for in the unrolled modes of a convolution; ignored by W @ X. Explicit
    conflicts are named."""
    w, _ = conv_weight(torch.randn(4, 3, 3, 3))
    assert not plan_for(Schedule(mode="values"), w, 64, "float32", conv=True).tap_pointers
    on = plan_for(Schedule(mode="values", tap_pointers=True), w, 64, "float32", conv=True)
    assert on.tap_pointers and not on.pad_input
    assert not plan_for(Schedule(mode="values", pad_input=True), w, 64, "float32",
                        conv=True).tap_pointers
    assert not plan_for(Schedule(mode="values", tap_pointers=False), w, 64, "float32",
                        conv=True).tap_pointers
    assert not plan_for(Schedule(mode="table"), w, 64, "float32", conv=True).tap_pointers
    assert not plan_for(Schedule(mode="values", tap_pointers=True), w, 64, "float32").tap_pointers
    with pytest.raises(ValueError, match="tap_pointers replaces pad_input"):
        plan_for(Schedule(mode="values", tap_pointers=True, pad_input=True), w, 64, "float32",
                 conv=True)
    with pytest.raises(ValueError, match="tap_pointers applies to the unrolled modes"):
        plan_for(Schedule(mode="table", tap_pointers=True), w, 64, "float32", conv=True)
    with pytest.raises(ValueError, match="tap_pointers"):
        Schedule(tap_pointers="yes")
    assert "tap_pointers=False" in repr(Schedule(tap_pointers=False))
    assert eval(repr(Schedule(tap_pointers=True)), {"Schedule": Schedule}) == \
        Schedule(tap_pointers=True)


def test_zero_buffer_covers_every_channel_offset_grows_and_stays_zero():
    X = torch.randn(2, 3, 4, 5).to(DEV)
    zb = zero_buffer(X)
    assert zb.numel() >= 2 * X.stride(1) + 1 and zb.dtype == X.dtype and zb.device == X.device
    assert zero_buffer(torch.randn(1, 2, 3, 3).to(DEV)) is zb      # smaller: the same one
    big = torch.randn(1, 8, 6, 6).to(DEV)
    zb2 = zero_buffer(big)
    assert zb2.numel() >= 7 * 36 + 1 and zero_buffer(X) is zb2    # grown, then kept
    cl = torch.randn(1, 9, 2, 2).to(DEV).to(memory_format=torch.channels_last)
    assert zero_buffer(cl).numel() >= 8 * cl.stride(1) + 1
    k = _kernel(masked_conv_weight(torch.Generator().manual_seed(13), 4, 8, 3, 3, 0.6))
    k(big)
    assert not zero_buffer(big).any()          # the kernels only read it


@pytest.mark.gpu
def test_tap_pointers_first_called_inside_a_cuda_graph(monkeypatch):
    """A zero buffer made during a capture is the graph's own (its fill runs at each replay)
    and not kept: eager calls after the capture get a real one."""
    import sparsert_triton.launch as launch
    g = torch.Generator().manual_seed(14)
    k = _kernel(masked_conv_weight(g, 8, 4, 3, 3, 0.5), block_n=64)
    X = torch.randn(2, 4, 9, 7, generator=g).cuda()
    k(X)                                  # built, compiled and its buffers on the GPU
    torch.cuda.synchronize()
    monkeypatch.setattr(launch, "_zero_buffers", {})     # ... but no zero buffer yet
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        Yg = k(X)
    assert launch._zero_buffers == {}
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(Yg.double().cpu(), k.reference(X).cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k(X).double().cpu(), k.reference(X).cpu(), rtol=1e-5, atol=1e-5)
    assert not launch._zero_buffers[(X.device, X.dtype)].any()
