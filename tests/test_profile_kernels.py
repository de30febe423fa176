"""bench/profile_kernels.py: every profiled convolution schedule is a valid plan for its layer
(128 -> 128 channels, 3x3, batch 8 at 28 x 28), and the grids are the ones its notes name."""
import math

import torch

from dsl import Schedule
from sparsert_triton.canonicalise import plan_for
from sparsert_triton.weights import as_sparse_weight


def test_profiled_convolution_schedules_resolve_for_their_layer():
    from bench.profile_kernels import CONV_CASES, FETCH_CASES
    g = torch.Generator().manual_seed(0)
    w = as_sparse_weight(torch.randn(128, 1152, generator=g)
                         * (torch.rand(128, 1152, generator=g) < 0.1))
    N = 8 * 28 * 28
    grids = []
    for _, _, B, H, s in CONV_CASES + FETCH_CASES:
        assert isinstance(s, Schedule) and B * H * H == N
        p = plan_for(s, w, N, "float32", conv=True)
        assert p.pad_input or p.tap_pointers or p.mode == "table"
        if p.mode != "table":
            grids.append((math.ceil(128 / p.rows_per_program) * math.ceil(N / p.block_n)
                          * p.split_k, p.num_warps))
    # FETCH_CASES: 52 programs of 16 warps, 100 of 8, 104 of 16 (two slices), 208 of 16
    assert grids[-4:] == [(52, 16), (100, 8), (104, 16), (208, 16)]
