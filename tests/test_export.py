"""``torch.export`` of a sparsified model: the program carries its masks (the CSR buffers
and a pattern key naming shape, schedule and mask digest), so it can be saved and run in
another process; there the ops rebuild each pattern from the buffers on first use."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from dsl import Schedule
from sparsert_triton import ops
from sparsert_triton.nn import SparseLinear, sparsify

DEVICE = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
ROOT = Path(__file__).resolve().parent.parent

LOAD = r"""
import os, sys
if sys.argv[3] == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
import torch
import sparsert_triton.ops                       # registers the sparsert:: ops
from sparsert_triton.nn import SparseLinear
# patterns of this process take the ids 1, 2, ... that the saving process used
torch.manual_seed(1)
decoys = [SparseLinear(4 * 5 * 5, 6, mask=torch.rand(6, 4 * 5 * 5) < 0.5, device=sys.argv[3])
          for _ in range(3)]
program = torch.export.load(sys.argv[1])
x, expected = torch.load(sys.argv[2])
y = program.module()(x)
print("max_error", (y - expected).abs().max().item())
"""


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                      nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for layer in (m[0], m[2], m[4]):
            layer.weight.mul_(torch.rand_like(layer.weight) < 0.3)
    model, report = sparsify(m, schedule=Schedule(mode="table"))
    assert len(report.replaced) == 3
    return model


def test_an_exported_program_runs_in_another_process(tmp_path):
    model = _model().to(DEVICE)
    x = torch.randn(2, 2, 5, 5, device=DEVICE)
    with torch.no_grad():
        expected = model(x)
        program = torch.export.export(model, (x,))
    targets = [n.target for n in program.graph.nodes]
    assert targets.count(torch.ops.sparsert.spmm.default) == 2
    assert targets.count(torch.ops.sparsert.sparse_conv2d.default) == 1
    # the mask buffers are inputs of the program, saved with it
    assert {"0.indptr", "0.indices", "2.indptr", "4.indices"} <= set(program.state_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # e.g. a buffer sharing another tensor's storage
        torch.export.save(program, tmp_path / "model.pt2")
    torch.save((x, expected), tmp_path / "io.pt")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "model.pt2"),
                          str(tmp_path / "io.pt"), DEVICE], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    err = float(out.stdout.split("max_error")[-1])
    assert err <= 1e-5


def _unregistered_key(p, **change):
    """``p``'s key as another process would meet it: not registered here."""
    import json
    fields = json.loads(p.key)
    fields.update(id="elsewhere", **change)
    return json.dumps(fields, sort_keys=True)


@pytest.mark.usefixtures("on_test_device")
def test_a_key_seen_first_is_rebuilt_from_the_mask_tensors():
    torch.manual_seed(2)
    layer = SparseLinear(6, 5, mask=torch.rand(5, 6) < 0.5, bias=False)
    p = layer._pattern
    key = _unregistered_key(p)
    X = torch.randn(6, 3)
    Y = ops.spmm(X, layer.values.detach(), None, layer.indptr, layer.indices, key)
    torch.testing.assert_close(Y, layer.dense_weight().detach() @ X)
    assert ops.pattern_for(key, layer.indptr, layer.indices) is ops._ADOPTED[key]
    assert ops._ADOPTED[key].kernel_id != p.kernel_id


@pytest.mark.usefixtures("on_test_device")
def test_mask_tensors_that_do_not_match_the_key_are_refused():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[:, 1] = True
    layer = SparseLinear(4, 3, mask=mask, bias=False)
    key = _unregistered_key(layer._pattern)
    other = torch.tensor([0, 0, 0])                   # another column, same nnz
    X = torch.randn(4, 2)
    with pytest.raises(ValueError, match="digest"):
        ops.spmm(X, layer.values.detach(), None, layer.indptr, other, key)
    # nothing was registered under the key: the right tensors still work
    Y = ops.spmm(X, layer.values.detach(), None, layer.indptr, layer.indices, key)
    torch.testing.assert_close(Y, layer.dense_weight().detach() @ X)
    with pytest.raises(ValueError, match="not a sparse pattern key"):
        ops.spmm(torch.randn(4, 2), layer.values.detach(), None, layer.indptr, layer.indices,
                 "7")
