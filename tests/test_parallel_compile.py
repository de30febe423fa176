"""The opt-in parallel first compile: argument mocking, the knob, and its failure path."""
import types
from pathlib import Path

import pytest
import torch

from sparsert_triton.compiler.compile import compile_workers, mock_args, warm_in_parallel


def test_mock_args_keep_numbers_and_dtypes():
    X = torch.zeros(3, 4, dtype=torch.float16)
    assert mock_args([X, 7, 2.5, torch.zeros(1, dtype=torch.int32)]) == \
        [torch.float16, 7, 2.5, torch.int32]


def test_knob(monkeypatch):
    monkeypatch.setenv("SPARSERT_COMPILE_WORKERS", "4")
    assert compile_workers() == 4
    monkeypatch.delenv("SPARSERT_COMPILE_WORKERS")
    assert compile_workers() == 0
    monkeypatch.setenv("SPARSERT_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="SPARSERT_COMPILE_WORKERS"):
        compile_workers()


def test_failure_warns_and_returns(tmp_path):
    """A worker that cannot compile (here: no such module) leaves the launch to compile."""
    variant = types.SimpleNamespace(path=Path(tmp_path / "missing.py"), key="k" * 32)
    fn = types.SimpleNamespace(__name__="sparse_kernel_0")
    with pytest.warns(UserWarning, match="parallel compile failed"):
        warm_in_parallel(variant, [(fn, (1, 1), (torch.zeros(1), 3))] * 2, {}, False, 2)
