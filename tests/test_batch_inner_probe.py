"""bench/batch_inner_probe.py: its probe kernels compute the convolution they are timed as
(against F.conv2d in float64, interpreter), for each variant that runs without the GPU."""
import os

import pytest
import torch
import torch.nn.functional as F

from bench.batch_inner_probe import VARIANT_SETS, BatchInnerConv
from bench.probe_harness import rel_err

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")

# every distinct variant; the SM-affine grid reads %smid (inline PTX): GPU only
VARIANTS = sorted({v for vs in VARIANT_SETS.values() for v in vs
                   if DEV != "cpu" or v[3] == 0})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("C,C_out,H,stride,B", [(6, 5, 7, 1, 4), (5, 9, 8, 2, 8)])
def test_probe_kernel_matches_conv2d(variant, C, C_out, H, stride, B):
    block, warps, pf, affine, ksplit, chunk, rows = variant
    g = torch.Generator().manual_seed(C * 100 + H)
    W = torch.randn(C_out, C, 3, 3, generator=g) * (torch.rand(C_out, C, 3, 3, generator=g) < 0.3)
    W[1] = 0                                   # an empty row
    X = torch.randn(B, C, H, H, generator=g)
    ref = F.conv2d(X.double(), W.double(), stride=stride, padding=1)
    k = BatchInnerConv(W.to(DEV), stride, H, B, block, warps, chunk=chunk, prefetch=pf,
                       affine=affine, ksplit=ksplit, rows=rows)
    assert rel_err(k(X.to(DEV)).cpu(), ref) < 1e-5


def test_batch_must_be_a_multiple_of_four():
    with pytest.raises(ValueError, match="batch"):
        BatchInnerConv(torch.ones(2, 2, 3, 3), 1, 5, 6, 128, 1)
