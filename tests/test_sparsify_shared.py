"""``sparsify`` keeps a model's sharing: a module used in several places becomes one sparse
layer used in all of them; a weight shared between modules keeps them dense."""
import pytest
import torch
from torch import nn

from sparsert_triton.nn import SparseConv2d, SparseLinear, sparsify

pytestmark = pytest.mark.usefixtures("on_test_device")


def pruned(layer, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight) < 0.2)
    return layer


def close(a, b):
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inplace", [True, False])
def test_a_module_used_twice_in_a_sequential_is_one_sparse_layer(inplace):
    lin = pruned(nn.Linear(8, 8))
    model = nn.Sequential(lin, nn.ReLU(), lin)
    x = torch.randn(3, 8)
    ref = model(x)
    model, report = sparsify(model, inplace=inplace)
    assert isinstance(model[0], SparseLinear) and model[2] is model[0]
    assert [r.layer for r in report] == ["0"]
    assert len(list(model.parameters())) == 2             # values and bias, once
    close(model(x), ref)


class Tied(nn.Module):
    """The same Linear under two attribute names, and a Conv2d under two more."""

    def __init__(self):
        super().__init__()
        self.enc = pruned(nn.Linear(8, 8), seed=1)
        self.dec = self.enc
        self.conv = pruned(nn.Conv2d(2, 2, 3, padding=1), seed=2)
        self.conv_again = self.conv

    def forward(self, x, img):
        return self.dec(torch.relu(self.enc(x))), self.conv_again(self.conv(img))


def test_tied_attributes_stay_tied():
    model = Tied()
    x, img = torch.randn(2, 8), torch.randn(1, 2, 5, 5)
    ref = model(x, img)
    sparsify(model)
    assert isinstance(model.enc, SparseLinear) and model.dec is model.enc
    assert isinstance(model.conv, SparseConv2d) and model.conv_again is model.conv
    for a, b in zip(model(x, img), ref):
        close(a, b)
    model.enc.values.data.mul_(2)      # one set of values serves both uses
    model.enc.refresh()
    assert torch.equal(model.dec.values, model.enc.values)


def test_modules_sharing_a_weight_parameter_stay_dense():
    a = pruned(nn.Linear(8, 8), seed=3)
    b = nn.Linear(8, 8)
    b.weight = a.weight                # tied weights, separate biases
    model = nn.Sequential(a, b)
    _, report = sparsify(model)
    assert type(model[0]) is nn.Linear and type(model[1]) is nn.Linear
    assert model[1].weight is model[0].weight
    assert all("shared" in r.mode for r in report) and not report.replaced
