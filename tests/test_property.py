"""Property suite: every mode, schedule, dtype and epilogue against float64 torch.matmul.

The wide cases (``sparsert_triton.testing.wide_cases``) run per (mode, X dtype): mixed weight
dtypes, float64 with half outputs, random epilogue trees with inf/nan constants, NaN/inf in X
against each kernel's documented rule, strided, in-place and aliased ``out=``, operand names
like generated ones, second calls. In the ``ci`` profile a few each; ``gpu`` and ``slow`` run
their profile's count (``HYPOTHESIS_PROFILE=slow``: 10,000 per (mode, dtype), not in CI).
"""
import os

import pytest
from hypothesis import given, settings

from sparsert_triton.testing import DTYPES, cases, check_case, check_wide_case, wide_cases

MODES = ("values", "indices", "table", "blocks", "bitmap", "expand")
#: the modes whose kernels take half-precision X only
HALF_ONLY = {"expand": ("float16", "bfloat16")}
#: wide cases per (mode, dtype) in the ci profile (12 tests, ~0.1 s a case on the CPU)
CI_WIDE = 10
_budget = (settings(max_examples=CI_WIDE)
           if os.environ.get("SPARSERT_HYPOTHESIS_PROFILE", "ci") == "ci" else settings())
@given(case=cases(modes=["values"]))
def test_values_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["indices"]))
def test_indices_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["table"]))
def test_table_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["blocks"]))
def test_blocks_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["bitmap"]))
def test_bitmap_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["expand"], dtypes=["float16", "bfloat16"]))
def test_expand_mode(case, device):
    check_case(case, device)


# (the interpreter's numpy warns of the inf * 0 and inf - inf the NaN cases compute)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("mode", MODES)
def test_wide_cases(mode, dtype, device):
    if dtype not in HALF_ONLY.get(mode, (dtype,)):
        pytest.skip(f"{mode} mode takes X in {' or '.join(HALF_ONLY[mode])} only")
    @_budget
    @given(case=wide_cases(modes=[mode], dtypes=[dtype]))
    def run(case):
        check_wide_case(case, device)
    run()
