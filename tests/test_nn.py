"""SparseLinear and sparsify: against the dense masked nn.Linear, state, compile, fine-tuning."""
import io
import os

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch import nn

from dsl import Schedule
from sparsert_triton.estimate import predicted_speedup
from sparsert_triton.nn import SparseLinear, sparsify

IN, OUT = 24, 16

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")

pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


def pruned_linear(in_f=IN, out_f=OUT, sparsity=0.8, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        w = lin.weight
        k = int(round(sparsity * w.numel()))
        w.view(-1)[w.abs().view(-1).argsort()[:k]] = 0
    return lin


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(IN,), (5, IN), (2, 3, IN)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_dense_masked_linear(shape, bias):
    lin = pruned_linear(bias=bias)
    layer = SparseLinear.from_linear(lin)
    assert layer.nnz == int((lin.weight != 0).sum())
    x = torch.randn(*shape)
    y = layer(x)
    assert y.shape == shape[:-1] + (OUT,)
    close(y, lin.double()(x.double()))
    with torch.no_grad():               # the direct path (no custom-op dispatch): same result
        assert torch.equal(layer(x), y)
    if len(shape) > 1:   # the kernel's (N, out) result: row-major as nn.Linear's, no copy
        assert y.is_contiguous()
        layer.output_layout = "columns"     # the kernel's (out, N) result, returned as a view
        yc = layer(x)
        close(yc, y)
        assert yc.stride()[-1] == yc.shape[:-1].numel() and yc._base is not None


def test_explicit_mask_keeps_zero_valued_entries():
    lin = pruned_linear(sparsity=0.0)
    mask = torch.rand(OUT, IN) < 0.3
    layer = SparseLinear.from_linear(lin, mask=mask)
    assert layer.nnz == int(mask.sum())
    assert torch.equal(layer.mask(), mask)
    x = torch.randn(4, IN)
    close(layer(x), x @ (lin.weight * mask).t() + lin.bias)


def test_chained_layers_read_a_contiguous_transposed_input():
    a = SparseLinear.from_linear(pruned_linear(seed=1), output_layout="columns")
    b = SparseLinear.from_linear(pruned_linear(OUT, 8, seed=2))
    x = torch.randn(2, 3, IN)
    h = a(x)
    assert h.reshape(-1, OUT).t().is_contiguous()     # b's X^T view needs no copy
    close(b(h), b.to_linear()(a.to_linear()(x)))


def test_state_dict_round_trips_into_a_fresh_layer():
    layer = SparseLinear.from_linear(pruned_linear(seed=3),
                                     schedule=Schedule(mode="indices", rows_per_program=4))
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = SparseLinear(IN, OUT)       # a dense placeholder mask: replaced by the load
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.nnz == layer.nnz and fresh.schedule == layer.schedule
    assert torch.equal(fresh.mask(), layer.mask())
    x = torch.randn(3, IN)
    assert torch.equal(fresh(x), layer(x))


def test_state_dict_of_wrong_shape_is_rejected():
    layer = SparseLinear.from_linear(pruned_linear())
    other = SparseLinear(IN, OUT + 1)
    with pytest.raises(RuntimeError, match="indptr"):
        other.load_state_dict(layer.state_dict())


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2),
                                       (torch.float64, 1e-12)])
def test_dtype_conversion_respecialises(dtype, tol):
    layer = SparseLinear.from_linear(pruned_linear(seed=4))
    x = torch.randn(4, IN)
    layer(x)                                     # specialised for float32 first
    ref = layer.to_linear().double()(x.double())
    layer = layer.to(dtype)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    with pytest.raises(TypeError, match="input is torch.float32"):
        layer(x)


def test_plain_cpu_without_interpreter_raises(monkeypatch):
    with torch.device("cpu"):
        layer = SparseLinear.from_linear(pruned_linear())
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="sparse kernels run on CUDA"):
            layer(torch.randn(2, IN))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = pruned_linear(IN, 32, 0.9, seed=5)      # replaced
        self.fc2 = pruned_linear(32, 32, 0.1, seed=6)      # kept: not sparse enough
        self.conv = nn.Conv2d(1, 1, 1)                     # kept: dense (sparsity 0)
        self.blocks = nn.Sequential(nn.ReLU(), pruned_linear(32, OUT, 0.6, seed=7))

    def forward(self, x):
        return self.blocks(self.fc2(self.fc1(x)))


def test_sparsify_replaces_only_eligible_layers():
    net = Net()
    x = torch.randn(2, 3, IN)
    ref = net(x)
    kept_fc2 = net.fc2
    model, report = sparsify(net, min_sparsity=0.5)
    assert model is net
    assert isinstance(net.fc1, SparseLinear) and isinstance(net.blocks[1], SparseLinear)
    assert net.fc2 is kept_fc2 and isinstance(net.conv, nn.Conv2d)
    rows = {r.layer: r for r in report}
    assert set(rows) == {"fc1", "fc2", "conv", "blocks.1"}
    assert [r.layer for r in report.replaced] == ["fc1", "blocks.1"]
    assert rows["fc1"].shape == (32, IN) and abs(rows["fc1"].sparsity - 0.9) < 0.01
    assert rows["fc2"].action == "dense" and rows["fc1"].mode in ("values", "indices", "table")
    # the measured model at the assumed N = tune_n = 128 rows (fp32: N 17-256 of the DLMC
    # suite), not 1 / density (which would say ~10x at 90%)
    assert rows["fc1"].n == 128 and rows["fc1"].n_assumed
    assert rows["fc1"].est_speedup == pytest.approx(predicted_speedup(
        "matmul", 32, IN, 128, 1 - rows["fc1"].sparsity, "float32", rows["fc1"].mode).ratio)
    assert 1.0 < rows["fc1"].est_speedup < 3.0
    text = str(report)
    assert "blocks.1" in text and "est. speedup" in text and "dlmc_h100.csv" in text
    assert "1/density" not in text and "assumed N" in text
    assert "2 of 4 listed layers replaced" in text
    close(model(x), ref)


def test_sparsify_copy_leaves_the_original():
    net = Net()
    model, report = sparsify(net, min_sparsity=0.5, inplace=False,
                             schedule=Schedule(mode="table"))
    assert isinstance(net.fc1, nn.Linear) and isinstance(model.fc1, SparseLinear)
    assert model.fc1.schedule.mode == "table"
    assert model.fc1.kernel_id != 0
    x = torch.randn(4, IN)
    close(model(x), net(x))


def test_compile_fullgraph_traces_the_custom_op():
    model, _ = sparsify(Net(), min_sparsity=0.5, inplace=False)
    x = torch.randn(2, 3, IN, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    y = compiled(x)
    close(y, model(x))
    assert counter.frame_count == 1                  # one graph, no breaks
    targets = [n.target for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.sparsert.spmm.default) == 2
    y.sum().backward()                               # the backward graph runs the op's autograd
    g = x.grad.clone()
    x.grad = None
    model(x).sum().backward()
    close(g, x.grad)


@pytest.mark.parametrize("mode", [None, "blocks", "bitmap"])
def test_compile_with_inductor(mode):
    """Through the custom op under ``torch.compile`` in every kernel family's mode (the
    row-block modes are the half-precision defaults for few columns)."""
    layer = SparseLinear.from_linear(pruned_linear(seed=8),
                                     schedule=Schedule(mode=mode) if mode else None)
    x = torch.randn(2, 3, IN)
    with torch.no_grad():
        y = torch.compile(layer, fullgraph=True)(x)
    close(y, layer.to_linear()(x))


def test_frozen_mask_fine_tuning():
    torch.manual_seed(0)
    layer = SparseLinear.from_linear(pruned_linear(seed=9),
                                     schedule=Schedule(mode="indices"))
    mask = layer.mask()
    target = nn.Linear(IN, OUT)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(32, IN)
    losses = []
    for _ in range(4):
        y = layer(x)
        close(y, layer.to_linear()(x))          # the kernel follows every update
        loss = (y - target(x).detach()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert layer.values.grad.shape == (layer.nnz,)   # gradient at the mask only
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    w = layer.dense_weight().detach()
    assert torch.all(w[~mask] == 0) and torch.equal(layer.mask(), mask)


def test_layer_gradcheck_float64():
    layer = SparseLinear.from_linear(pruned_linear(8, 6, seed=10)).double()
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)

    def f(x, values, bias):
        layer.refresh()             # gradcheck perturbs through .data
        y = torch.ops.sparsert.spmm(x.t(), values, bias, *layer._mask_args())
        return y.t()

    assert torch.autograd.gradcheck(f, (x, layer.values, layer.bias), eps=1e-6, atol=1e-7)


@pytest.mark.gpu
def test_half_layer_compiled_with_inductor_on_gpu():
    lin = pruned_linear(256, 512, 0.9, seed=11).cuda().half()
    layer = SparseLinear.from_linear(lin)
    x = torch.randn(4, 16, 256, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        y = torch.compile(layer, fullgraph=True)(x)
        ref = lin.float()(x.float())
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_sparsify_with_tune_takes_the_fastest_schedule():
    """The real tuner, its timer injected: the schedule it reports fastest is installed."""
    fast = Schedule(mode="table", rows_per_program=2, chunk=8, block_n=16)
    slow = Schedule(mode="indices", rows_per_program=4, block_n=16)

    def timer(fn):
        fn()
        return 1.0 if timer.current.mode == "table" else 5.0   # candidates may come resolved

    import sparsert_triton.api as api
    orig_init = api.SpecializedKernel.__init__

    def spy(self, program, schedule, weight, conv=None):   # which candidate is being timed
        timer.current = schedule
        orig_init(self, program, schedule, weight, conv)

    api.SpecializedKernel.__init__ = spy
    try:
        model, report = sparsify(nn.Sequential(pruned_linear(seed=12)), min_sparsity=0.5,
                                 tune=True, tune_n=8,
                                 tune_kwargs=dict(timer=timer, candidates=[slow, fast],
                                                  use_cache=False, progress=False))
    finally:
        api.SpecializedKernel.__init__ = orig_init
    chosen = model[0].schedule
    assert (chosen.mode, chosen.rows_per_program, chosen.chunk) == ("table", 2, 8)
    assert report[0].mode == "table"
    x = torch.randn(3, IN)
    close(model(x), model[0].to_linear()(x))


def test_kernel_reads_unit_stride_columns(monkeypatch):
    """Row-major inputs are transposed once so the kernel's column tiles are contiguous; a
    sparse layer's "columns" output feeds the next sparse layer without a copy."""
    from sparsert_triton import ops as ops_module
    seen = []
    real = ops_module.SparsePattern.spmm

    def spy(self, X, *a):
        seen.append((X.stride(1), X.data_ptr()))
        return real(self, X, *a)
    monkeypatch.setattr(ops_module.SparsePattern, "spmm", spy)
    first = SparseLinear.from_linear(pruned_linear(seed=21), output_layout="columns")
    second = SparseLinear.from_linear(nn.Linear(first.out_features, 5))
    x = torch.randn(7, IN)
    with torch.no_grad():
        h = first(x)
        y = second(h)
    assert [s for s, _ in seen] == [1, 1]
    assert seen[1][1] == h.data_ptr()          # the second layer read h in place
    ref = second.to_linear()(first.to_linear()(x))
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_backward_after_the_layer_is_freed():
    """The autograd graph keeps the layer's sparse pattern alive until backward."""
    import gc
    lin = pruned_linear(seed=7)
    x = torch.randn(3, IN, requires_grad=True)
    y = SparseLinear.from_linear(lin)(x)       # the layer itself is dropped here
    gc.collect()
    y.sum().backward()
    ref = x.detach().clone().requires_grad_()
    lin(ref).sum().backward()
    close(x.grad, ref.grad)


def test_internal_tensors_ignore_the_default_device():
    """Host-side index and value tensors are pinned to the CPU, so a default-device context
    (``torch.set_default_device``; ``meta`` stands in for another device here) changes
    nothing: results land on the inputs' device."""
    from sparsert_triton import sparse_kernel
    lin = pruned_linear(seed=8)
    x = torch.randn(4, IN)
    W = lin.weight.detach().clone()
    X = torch.randn(IN, 9)
    with torch.device("meta"):
        y = SparseLinear.from_linear(lin)(x)
        k = sparse_kernel(lambda W, X: W @ X).specialize(W)
        Y = k(X)
        ref_w = k.weight.to_dense()
    dev = torch.device(DEV).type
    assert y.device.type == dev and Y.device.type == dev and ref_w.device.type == "cpu"
    close(y, lin.double()(x.double()))
    close(Y, W.double() @ X.double())


def test_sparsify_tunes_linears_for_their_example_rows():
    """With example_inputs a Linear is tuned for its real rows of input (batch x sequence),
    not tune_n."""
    from sparsert_triton import tune as T
    seen, real_tune = [], T.tune

    def spy(kernel, weight, X, *operands, **kw):
        seen.append(tuple(X.shape))
        return real_tune(kernel, weight, X, *operands, **kw)

    T.tune = spy
    try:
        x = torch.randn(3, 5, IN)
        sparsify(nn.Sequential(pruned_linear(seed=13)), min_sparsity=0.5, tune=True, tune_n=8,
                 example_inputs=(x,),
                 tune_kwargs=dict(timer=lambda fn: 1.0, use_cache=False, progress=False,
                                  candidates=[Schedule(mode="table", block_n=16)]))
    finally:
        T.tune = real_tune
    assert seen == [(IN, 15)]


def test_expand_mode_half_layer_compiled_and_its_gradients():
    """The expand mode (half-precision X only) through the custom op under ``torch.compile``,
    and eagerly with autograd: the input gradient (W^T @ G, its own expand kernel) and the
    values' gradient match the dense layer's."""
    sched = Schedule(mode="expand", rows_per_program=16, chunk=32)
    dense = pruned_linear(seed=12).half()
    layer = SparseLinear.from_linear(dense, schedule=sched)
    x = torch.randn(2, 3, IN).half()
    with torch.no_grad():
        y = torch.compile(layer, fullgraph=True)(x)
    ref = layer.to_linear().float()
    close(y.float(), ref(x.float()), tol=2e-2)
    xg = x.clone().requires_grad_()
    layer(xg).float().pow(2).sum().backward()
    xr = x.float().clone().requires_grad_()
    ref(xr).pow(2).sum().backward()
    close(xg.grad.float(), xr.grad, tol=5e-2)
    close(layer.values.grad.float(), ref.weight.grad[ref.weight != 0], tol=5e-2)
