"""SparseConv2d, the sparsert::sparse_conv2d ops and sparsify on CNNs: against the dense masked
nn.Conv2d in float64; state, dtypes, gradients, fine-tuning, torch.compile."""
import copy
import io

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch import nn

from dsl import Schedule
from sparsert_triton import ops
from sparsert_triton.estimate import predicted_speedup
from sparsert_triton.nn import DEFAULT_CONV_N, SparseConv2d, SparseLinear, sparsify


pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


def pruned_conv(cin=3, cout=5, k=3, sparsity=0.7, seed=0, **kw):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, **kw)
    with torch.no_grad():
        w = conv.weight.view(-1)
        w[w.abs().argsort()[:int(round(sparsity * w.numel()))]] = 0
    return conv


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("stride,padding,bias,channels_last", [
    (1, 0, True, False), (1, 1, False, True), (2, 1, True, True), (2, 0, False, False)])
def test_matches_dense_masked_conv(stride, padding, bias, channels_last):
    conv = pruned_conv(stride=stride, padding=padding, bias=bias, seed=stride + 2 * padding)
    layer = SparseConv2d.from_conv2d(conv)
    assert layer.nnz == int((conv.weight != 0).sum())
    assert torch.equal(layer.dense_weight(), conv.weight)
    x = torch.randn(2, 3, 7, 6)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = layer(x)
    ref = conv.double()(x.double())
    assert y.shape == ref.shape and y.is_contiguous()
    close(y, ref)
    with torch.no_grad():                # the direct path (no custom-op dispatch): same result
        assert torch.equal(layer(x), y)


def test_unbatched_input_and_dilation():
    conv = pruned_conv(2, 4, 3, padding=2, dilation=2, seed=1)
    layer = SparseConv2d.from_conv2d(conv)
    x = torch.randn(2, 6, 5)
    y = layer(x)
    assert y.shape == (4, 6, 5)
    close(y, conv.double()(x.double()))


def test_explicit_mask_keeps_zero_valued_entries():
    conv = pruned_conv(sparsity=0.0, seed=2)
    mask = torch.rand(conv.weight.shape) < 0.3
    for m in (mask, mask.reshape(5, -1)):             # 4-D or the flattened (C_out, C_in*kh*kw)
        layer = SparseConv2d.from_conv2d(conv, mask=m)
        assert layer.nnz == int(mask.sum()) and torch.equal(layer.mask(), mask)
    # values are in CSR order of PyTorch's flattening of the weight
    assert torch.equal(layer.values.detach(), conv.weight.detach().reshape(5, -1)[mask.reshape(5, -1)])
    x = torch.randn(1, 3, 5, 5)
    close(layer(x), nn.functional.conv2d(x, conv.weight * mask, conv.bias))


def test_state_dict_round_trips_into_a_fresh_layer():
    layer = SparseConv2d.from_conv2d(pruned_conv(stride=2, padding=1, seed=3),
                                     schedule=Schedule(mode="table", rows_per_program=2))
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = SparseConv2d(3, 5, 3, stride=2, padding=1)     # dense placeholder mask
    assert fresh.nnz == 5 * 27
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.nnz == layer.nnz and fresh.schedule == layer.schedule
    assert torch.equal(fresh.mask(), layer.mask())
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(fresh(x), layer(x))
    with pytest.raises(RuntimeError, match="indptr"):
        SparseConv2d(3, 6, 3).load_state_dict(layer.state_dict())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float16, 3e-3),
                                       (torch.bfloat16, 3e-2)])
def test_dtype_conversion_respecialises(dtype, tol):
    layer = SparseConv2d.from_conv2d(pruned_conv(padding=1, seed=4))
    x = torch.randn(1, 3, 5, 5)
    layer(x)                                           # specialised for float32 first
    ref = layer.to_conv2d().double()(x.double())
    layer = layer.to(dtype)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    with pytest.raises(TypeError, match="input is torch.float32"):
        layer(x)


def test_unsupported_configurations_are_named():
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d.from_conv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        SparseConv2d.from_conv2d(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="asymmetrically"):
        SparseConv2d.from_conv2d(nn.Conv2d(2, 2, 2, padding="same"))
    with pytest.raises(ValueError, match="mask must have shape"):
        SparseConv2d(2, 3, 3, mask=torch.ones(3, 2, 3, 2))
    layer = SparseConv2d.from_conv2d(pruned_conv(seed=5))
    with pytest.raises(ValueError, match=r"expects input \(B, 3, H, W\)"):
        layer(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        layer(torch.randn(1, 3, 2, 5))
    same = SparseConv2d.from_conv2d(nn.Conv2d(2, 3, 3, padding="same"))
    assert same.padding == (1, 1)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = pruned_conv(3, 8, 3, 0.8, seed=6, padding=1)             # replaced
        self.conv2 = pruned_conv(8, 8, 3, 0.6, seed=7, stride=2, bias=False)  # replaced
        self.depthwise = pruned_conv(8, 8, 3, 0.9, seed=8, padding=1, groups=8)   # kept: groups
        self.dense = pruned_conv(8, 4, 1, 0.1, seed=9)                        # kept: sparsity
        self.fc = nn.Linear(4 * 9, 6)
        with torch.no_grad():
            self.fc.weight[torch.rand(6, 36) < 0.75] = 0                      # replaced

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.dense(self.depthwise(x))
        return self.fc(x.flatten(1))


def test_sparsify_replaces_convolutions_and_linears():
    net = CNN()
    x = torch.randn(2, 3, 7, 7)
    ref = net(x)
    model, report = sparsify(net, min_sparsity=0.5, inplace=False)
    assert isinstance(model.conv1, SparseConv2d) and isinstance(model.conv2, SparseConv2d)
    assert isinstance(model.fc, SparseLinear)
    assert type(model.depthwise) is nn.Conv2d and type(model.dense) is nn.Conv2d
    rows = {r.layer: r for r in report}
    assert [r.layer for r in report.replaced] == ["conv1", "conv2", "fc"]
    assert rows["conv1"].kind == "Conv2d" and rows["conv1"].shape == (8, 3, 3, 3)
    assert rows["conv1"].sparsity == pytest.approx(0.8, abs=0.01)
    assert rows["conv1"].mode in ("values", "indices", "table")
    # no example_inputs: a convolution is estimated at the assumed DEFAULT_CONV_N columns
    assert rows["conv2"].n == DEFAULT_CONV_N and rows["conv2"].n_assumed
    assert rows["conv2"].est_speedup == pytest.approx(predicted_speedup(
        "conv", 8, 8 * 9, DEFAULT_CONV_N, 1 - rows["conv2"].sparsity, "float32",
        rows["conv2"].mode, dense_tf32=torch.backends.cudnn.allow_tf32).ratio)
    assert "conv_h100.csv" in rows["conv2"].est_source
    assert rows["depthwise"].mode.startswith("kept: groups=8")
    assert rows["dense"].action == "dense" and rows["dense"].est_speedup is None
    text = str(report)
    assert "8x3x3x3" in text and "conv_h100.csv" in text and "3 of 5 listed layers" in text
    assert "1/density" not in text
    close(model(x), ref)
    assert model.conv2.bias is None


def test_sparsify_a_single_conv_layer():
    layer, report = sparsify(pruned_conv(seed=10), min_sparsity=0.5)
    assert isinstance(layer, SparseConv2d) and report[0].action == "sparse"
    copied = copy.deepcopy(layer)                 # a copy registers its own pattern
    assert copied.kernel_id != layer.kernel_id
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(copied(x), layer(x))


def test_sparsify_tune_without_example_inputs_leaves_convolutions_untuned():
    """Without example_inputs a conv's input size is unknown: it keeps its schedule and its
    row says so (no tuner call is made, so this runs without a GPU)."""
    model, report = sparsify(nn.Sequential(pruned_conv(seed=18)), min_sparsity=0.5, tune=True,
                             schedule=Schedule(mode="indices"))
    assert model[0].schedule == Schedule(mode="indices")
    assert report[0].mode == "indices (not tuned: no example_inputs)"


def test_sparsify_tunes_convolutions_at_their_example_input_size():
    """example_inputs: one forward pass records each layer's input; every conv (and Linear)
    is tuned for that shape with the real tuner (timer injected: the last conv candidate is
    reported fastest), a layer the pass does not reach is reported untuned."""
    from sparsert_triton import tune as T
    import itertools
    seen, ticks = [], itertools.count()

    def timer(fn):          # each candidate timed "faster" than the one before
        fn()
        return 1000.0 - next(ticks)

    real_tune = T.tune

    def spy(kernel, weight, X, *operands, **kw):
        seen.append(tuple(X.shape))
        return real_tune(kernel, weight, X, *operands, **kw)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = pruned_conv(3, 4, 3, seed=21, padding=1)
            self.b = pruned_conv(4, 5, 3, seed=22, stride=2)
            self.unused = pruned_conv(5, 5, 1, seed=23)

        def forward(self, x):
            return self.b(self.a(x))

    net = Net()
    x = torch.randn(2, 3, 9, 7)
    ref = net(x)
    T.tune = spy
    try:
        model, report = sparsify(net, min_sparsity=0.5, tune=True, example_inputs=(x,),
                                 tune_kwargs=dict(timer=timer, use_cache=False, progress=False,
                                                  budget_s=1e9))
    finally:
        T.tune = real_tune
    assert seen == [(2, 3, 9, 7), (2, 4, 9, 7)]          # each conv at its own input size
    rows = {r.layer: r for r in report}
    assert "not tuned" not in rows["a"].mode and "not tuned" not in rows["b"].mode
    assert rows["unused"].mode.endswith("(not tuned: example_inputs did not reach it)")
    w = model.b._pattern.base
    space = T.candidate_schedules(w, 2 * 4 * 3, "float32", conv=True)
    last = T.prune(space, w, 2 * 4 * 3, "float32", conv=True)[0][-1].plan
    assert model.b.schedule == last.to_schedule()
    close(model(x), ref)
    with pytest.raises(TypeError, match="example_inputs must be a tuple"):
        sparsify(Net(), tune=True, example_inputs=x)


def test_gradcheck_float64():
    """Input, masked-weight and bias gradients by finite differences, in float64.
    ``refresh`` makes every evaluation re-read values that gradcheck perturbs via ``.data``."""
    layer = SparseConv2d.from_conv2d(pruned_conv(2, 3, 3, 0.6, seed=11, stride=2, padding=1),
                                     schedule=Schedule(mode="indices")).double()
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)

    def f(x, values, bias):
        layer.refresh()
        return torch.ops.sparsert.sparse_conv2d(x, values, bias, *layer._mask_args())

    assert torch.autograd.gradcheck(f, (x, layer.values, layer.bias), eps=1e-6, atol=1e-7)


def test_gradients_match_dense_conv_autograd():
    conv = pruned_conv(3, 4, 3, 0.5, seed=12, stride=2, padding=1)
    layer = SparseConv2d.from_conv2d(conv)
    x = torch.randn(2, 3, 6, 5).to(memory_format=torch.channels_last).requires_grad_()
    G = torch.randn(2, 4, 3, 3)
    layer(x).backward(G)
    x64 = x.detach().double().requires_grad_()
    w64 = conv.weight.detach().double().requires_grad_()
    b64 = conv.bias.detach().double().requires_grad_()
    nn.functional.conv2d(x64, w64, b64, 2, 1).backward(G.double())
    close(x.grad, x64.grad)
    close(layer.values.grad, w64.grad[conv.weight != 0])      # gradient at the mask only
    close(layer.bias.grad, b64.grad)


def test_frozen_mask_fine_tuning():
    torch.manual_seed(0)
    layer = SparseConv2d.from_conv2d(pruned_conv(seed=13, padding=1),
                                     schedule=Schedule(mode="indices"))
    mask = layer.mask()
    target = nn.Conv2d(3, 5, 3, padding=1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.2)
    x = torch.randn(4, 3, 6, 6)
    losses = []
    for _ in range(4):
        y = layer(x)
        close(y, layer.to_conv2d()(x))          # the kernel follows every update
        loss = (y - target(x).detach()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert layer.values.grad.shape == (layer.nnz,)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    w = layer.dense_weight().detach()
    assert torch.all(w[~mask] == 0) and torch.equal(layer.mask(), mask)


def test_compile_fullgraph_traces_the_custom_op():
    model, _ = sparsify(nn.Sequential(pruned_conv(3, 6, 3, 0.7, seed=14, padding=1), nn.ReLU(),
                                      pruned_conv(6, 4, 3, 0.7, seed=15, stride=2)),
                        min_sparsity=0.5)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    y = compiled(x)
    close(y, model(x))
    assert counter.frame_count == 1                  # one graph, no breaks
    targets = [n.target for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.sparsert.sparse_conv2d.default) == 2
    y.sum().backward()
    g = x.grad.clone()
    gv = model[2].values.grad.clone()
    x.grad = None
    model.zero_grad()
    model(x).sum().backward()
    close(g, x.grad)
    close(gv, model[2].values.grad)


def test_opcheck_and_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    layer = SparseConv2d.from_conv2d(pruned_conv(2, 3, 3, 0.5, seed=16, stride=2, padding=1))
    args = (torch.randn(1, 2, 5, 5, requires_grad=True), layer.values.detach().clone()
            .requires_grad_(), torch.randn(3, requires_grad=True), *layer._mask_args())
    torch.library.opcheck(torch.ops.sparsert.sparse_conv2d.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))
    real = (torch.randn(2, 2, 7, 6), layer.values.detach())
    with FakeTensorMode() as mode:
        X, v, indptr, indices = (mode.from_tensor(t) for t in (*real, layer.indptr,
                                                               layer.indices))
        mask = (indptr, indices, layer._pattern.key)
        Y = ops.sparse_conv2d(X, v, None, *mask)
        GX = ops.sparse_conv2d_grad_input(Y, v, 7, 6, *mask)
        GV = ops.sparse_conv2d_grad_values(Y, X, *mask)
    assert (Y.shape, GX.shape, GV.shape) == ((2, 3, 4, 3), (2, 2, 7, 6), (layer.nnz,))
    with pytest.raises(TypeError, match="not a ConvPattern"):
        lin = SparseLinear(4, 3)
        ops.sparse_conv2d(torch.randn(1, 2, 5, 5), layer.values, None, *lin._mask_args())


def test_bench_resnet_gets_sparse_convolutions():
    """bench.models' ResNet (narrow, one block per stage) through sparsify, as bench.e2e does."""
    from bench.models import ResNet50, calibrate_batchnorm_, magnitude_prune_
    torch.manual_seed(0)
    net = magnitude_prune_(ResNet50(num_classes=5, width=2, blocks=(1, 1, 1, 1)), 0.8)
    x = torch.randn(1, 3, 16, 16)
    calibrate_batchnorm_(net, torch.randn(2, 3, 16, 16))
    model, report = sparsify(net, min_sparsity=0.5, inplace=False)
    convs = [r for r in report if r.kind == "Conv2d"]
    assert len(convs) == 1 + 4 * 4 and all(r.action == "sparse" for r in convs)
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    with torch.no_grad():     # reference in float64 (on a GPU, fp32 cuDNN may use TF32)
        close(model(x), copy.deepcopy(net).double()(x.double()), tol=1e-4)


def test_e2e_cli_without_gpu():
    from bench import e2e
    with pytest.raises(SystemExit) as exit_info:
        e2e.main(["--help"])
    assert exit_info.value.code == 0
    if not torch.cuda.is_available():
        assert e2e.main(["--models", "resnet50", "--quick"]) == 2     # says it needs a GPU


@pytest.mark.gpu
def test_half_conv_compiled_with_inductor_on_gpu():
    conv = pruned_conv(64, 128, 3, 0.9, seed=17, padding=1).cuda().half()
    layer = SparseConv2d.from_conv2d(conv)
    x = torch.randn(2, 64, 14, 14, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        y = torch.compile(layer, fullgraph=True)(x.to(memory_format=torch.channels_last))
        ref = conv.float()(x.float())
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_conv_backward_after_the_layer_is_freed_and_default_device_ignored():
    import gc
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    with torch.device("meta"):                  # stands in for a cuda default device
        y = SparseConv2d.from_conv2d(conv)(x)
    gc.collect()
    y.sum().backward()
    ref = x.detach().clone().requires_grad_()
    conv(ref).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-4, atol=1e-4)
