"""Property suite: every mode, schedule, dtype and epilogue against float64 torch.matmul."""
from hypothesis import given

from sparsert_triton.testing import cases, check_case


@given(case=cases(modes=["values"]))
def test_values_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["indices"]))
def test_indices_mode(case, device):
    check_case(case, device)


@given(case=cases(modes=["table"]))
def test_table_mode(case, device):
    check_case(case, device)
