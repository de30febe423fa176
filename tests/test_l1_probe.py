"""bench/l1_probe.py: the probe kernel sums the lane addresses it claims to (interpreter), so
its timings on the GPU are of the access pattern named in its row."""
import os

import pytest
import torch

from bench.l1_probe import PATTERNS, buffer, reference, run

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("W,gap,shift", PATTERNS)
def test_probe_sums_the_claimed_addresses(W, gap, shift):
    torch.manual_seed(0)
    X = buffer(2, DEV)
    Y = run(X, 2, 19, 64, 2, W, gap, shift)
    torch.testing.assert_close(Y.cpu().double(), reference(X, 2, 19, 64, W, gap, shift),
                               rtol=1e-5, atol=1e-4)
