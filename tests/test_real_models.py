"""sparsify() on small real architectures from public libraries (skipped when a library is not
installed): transformers' BERT and LLaMA (tiny configs, a few tokens) and torchvision's
ResNet-18 (small resolution). The Linears / Conv2ds are magnitude-pruned, the model is
sparsified, and its output must match the dense pruned model's."""
import copy

import pytest
import torch
from torch import nn

from sparsert_triton import SparseConv2d, SparseLinear, sparsify

pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


@torch.no_grad()
def prune_(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-|w| entries of every Linear / Conv2d."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.view(-1)
            w[w.abs().argsort()[:int(round(sparsity * w.numel()))]] = 0
    return model


def sparsified(dense: nn.Module, kinds, pruned=None) -> nn.Module:
    """sparsify() of a copy; every layer of ``kinds`` (in ``pruned``, default all of the
    model) must have been replaced."""
    model, report = sparsify(copy.deepcopy(dense), min_sparsity=0.5)
    layers = [m for m in (pruned or dense).modules() if type(m) in kinds]
    assert len(report.replaced) == len(layers) > 0
    assert sum(isinstance(m, (SparseLinear, SparseConv2d)) for m in model.modules()) == len(layers)
    return model


def close(a, b, tol=1e-4):
    err = (a.double() - b.double()).abs().max() / b.double().abs().max()
    assert err < tol, f"relative error {err:.2e}"


def test_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16)
    dense = prune_(transformers.BertModel(config), 0.9).eval()
    model = sparsified(dense, (nn.Linear,))
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        ref = dense(input_ids=ids).last_hidden_state
        close(model(input_ids=ids).last_hidden_state, ref)
        for m in model.modules():                 # the kernels read row-major inputs in place
            if isinstance(m, SparseLinear):
                m.row_major_input = "strided"
        close(model(input_ids=ids).last_hidden_state, ref)


def test_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=16)
    dense = prune_(transformers.LlamaModel(config), 0.9).eval()
    model = sparsified(dense, (nn.Linear,))
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        close(model(input_ids=ids).last_hidden_state, dense(input_ids=ids).last_hidden_state)


def test_torchvision_resnet18():
    """The stem, the first stage and the classifier pruned (the interpreter needs minutes for
    the 256- and 512-channel convolutions; the GPU benchmark converts whole models); the rest
    stays dense, the sparse layers run inside the real graph (batch norms, residuals,
    pooling)."""
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    dense = models.resnet18(num_classes=10).eval()
    pruned = nn.ModuleList([dense.conv1, dense.layer1, dense.fc])
    prune_(pruned, 0.98)
    model = sparsified(dense, (nn.Linear, nn.Conv2d), pruned)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        close(model(x), dense(x))
