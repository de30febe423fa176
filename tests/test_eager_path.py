"""How a sparse layer's eager call runs: through the custom op whenever something may look at
it, else without the dispatcher (autograd.Function when a gradient is needed, the kernel
alone otherwise); the input layout choice; the top-level imports."""
import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sparsert_triton import ops
from sparsert_triton.nn import SparseConv2d, SparseLinear

IN, OUT = 24, 16
pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


def pruned(module, sparsity=0.8, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        w = module.weight.view(-1)
        w[w.abs().argsort()[:int(round(sparsity * w.numel()))]] = 0
    return module


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


class Recording(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_dispatch_modes_see_the_op_even_without_grad():
    """A TorchDispatchMode (a profiler, FlopCounterMode, fake tensors) sees sparsert::spmm:
    the call goes through the dispatcher while one is active."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT)))
    x = torch.randn(3, IN)
    with torch.no_grad(), Recording() as mode:
        y = layer(x)
    assert torch.ops.sparsert.spmm.default in mode.ops
    close(y, layer.to_linear()(x))


def test_fake_tensors_take_the_ops_fake_implementation():
    from torch._subclasses.fake_tensor import FakeTensorMode
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT)))
    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
        y = layer(torch.empty(2, 5, IN))
    assert y.shape == (2, 5, OUT)


def test_routes():
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT)))
    x, v, b = torch.randn(3, IN), layer.values, layer.bias
    assert ops.route(x, v, b) == ops.AUTOGRAD                   # parameters need gradients
    with torch.no_grad():
        assert ops.route(x, v, b) == ops.DIRECT
    with torch.inference_mode():
        assert ops.route(x, v, b) == ops.DIRECT
    v.requires_grad_(False)
    b.requires_grad_(False)
    assert ops.route(x, v, b) == ops.DIRECT
    assert ops.route(x.requires_grad_(), v, b) == ops.AUTOGRAD
    with Recording():
        assert ops.route(x, v, b) == ops.DISPATCH


def _spmm_nodes(t):
    """Names of the autograd nodes reachable from ``t``."""
    seen, todo = [], [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.append(fn)
            todo += [f for f, _ in fn.next_functions]
    return [type(f).__name__ for f in seen]


def test_eager_gradients_match_the_custom_ops():
    """With gradients, eager calls use SpmmFunction (the op's own formula, outside the
    dispatcher): the same values and gradients as the custom op."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT), seed=1))
    x = torch.randn(2, 3, IN, requires_grad=True)
    y = layer(x)
    assert any("SpmmFunction" in n for n in _spmm_nodes(y))
    y.square().sum().backward()
    grads = [t.grad.clone() for t in (x, layer.values, layer.bias)]
    for t in (x, layer.values, layer.bias):
        t.grad = None
    Xt = x.reshape(-1, IN).t().contiguous()
    y_op = torch.ops.sparsert.spmm(Xt, layer.values, layer.bias, *layer._mask_args())
    y_op.t().reshape(2, 3, OUT).square().sum().backward()
    torch.testing.assert_close(y, y_op.t().reshape(2, 3, OUT))
    for g, t in zip(grads, (x, layer.values, layer.bias)):
        torch.testing.assert_close(g, t.grad)


def test_conv_eager_gradients_take_the_function():
    conv = pruned(nn.Conv2d(3, 4, 3, padding=1), seed=2)
    layer = SparseConv2d.from_conv2d(conv)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    y = layer(x)
    assert any("Conv2dFunction" in n for n in _spmm_nodes(y))
    y.sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    conv(ref_x).sum().backward()
    close(x.grad, ref_x.grad)
    close(layer.values.grad, conv.weight.grad[conv.weight != 0])


def test_row_major_input_choice(monkeypatch):
    """"transpose" (default) hands the kernel a unit-stride copy of a row-major input,
    "strided" the input itself; the results agree."""
    seen = []
    real = ops.SparsePattern.spmm

    def spy(self, X, *a):
        seen.append(X.stride())
        return real(self, X, *a)
    monkeypatch.setattr(ops.SparsePattern, "spmm", spy)
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT), seed=3))
    assert layer.row_major_input == "transpose"
    in_place = copy.deepcopy(layer)
    in_place.row_major_input = "strided"
    x = torch.randn(2, 5, IN)
    with torch.no_grad():
        y, y_in_place = layer(x), in_place(x)
    assert seen == [(10, 1), (1, IN)]
    close(y, y_in_place)
    close(y, layer.to_linear()(x))
    with pytest.raises(ValueError, match="row_major_input must be one of"):
        layer.row_major_input = "columns"


def test_top_level_imports():
    import sparsert_triton
    from sparsert_triton import SparseConv2d as C, SparseLinear as L, sparsify
    from sparsert_triton import nn as sparse_nn
    assert (C, L, sparsify) == (sparse_nn.SparseConv2d, sparse_nn.SparseLinear,
                                sparse_nn.sparsify)
    assert {"SparseConv2d", "SparseLinear", "sparsify"} <= set(sparsert_triton.__all__)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        sparsert_triton.no_such_name


def test_planned_calls_follow_new_values_and_bias():
    """A layer call of a planned layout runs the kernel of the values it is given: after an
    in-place update, a new Parameter, a new bias or a dtype conversion the result follows."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT), seed=4))
    x = torch.randn(6, IN)
    with torch.no_grad():
        for _ in range(2):
            close(layer(x), layer.to_linear()(x))
        layer.values.mul_(-1.5)                                  # version bump
        close(layer(x), layer.to_linear()(x))
        layer.values = nn.Parameter(torch.randn_like(layer.values))   # another tensor
        close(layer(x), layer.to_linear()(x))
        layer.bias = nn.Parameter(torch.randn_like(layer.bias))
        close(layer(x), layer.to_linear()(x))
        layer.load_state_dict({k: v * 2 if torch.is_tensor(v) and v.is_floating_point() else v
                               for k, v in layer.state_dict().items()})
        close(layer(x), layer.to_linear()(x))
        layer.double()
        y = layer(x.double())
        assert y.dtype == torch.float64
        close(y, layer.to_linear()(x.double()))


class _Block(nn.Module):
    """The call sequence of a transformer block: three projections of one LayerNorm output,
    attention, an output projection and a residual LayerNorm, then an MLP whose second
    layer reads the first one's (transposed) output through a GELU."""

    def __init__(self, h=IN, heads=2):
        super().__init__()
        self.ln1, self.ln2, self.heads = nn.LayerNorm(h), nn.LayerNorm(h), heads
        self.q, self.k, self.v, self.o = (pruned(nn.Linear(h, h), seed=s) for s in range(4))
        self.up, self.down = pruned(nn.Linear(h, 2 * h), seed=5), pruned(nn.Linear(2 * h, h), 6)

    def forward(self, x):
        B, S, H = x.shape
        h = self.ln1(x)
        q, k, v = (f(h).view(B, S, self.heads, -1).transpose(1, 2)
                   for f in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = self.ln2(x + self.o(a.transpose(1, 2).reshape(B, S, H)))
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def _layers(model):
    return [m for m in model.modules() if isinstance(m, SparseLinear)]


def test_a_models_calls_run_planned_after_the_first_forward():
    """In a model-shaped sequence of calls every sparse layer is checked once (its first
    call) and planned afterwards, whatever layouts its neighbours hand it."""
    from sparsert_triton import sparsify
    dense = nn.Sequential(_Block(), _Block()).eval()
    model, _ = sparsify(copy.deepcopy(dense))
    layers = _layers(model)
    assert len(layers) == 12
    with torch.no_grad():
        for i in range(3):
            x = torch.randn(2, 5, IN)            # a new input (new addresses) every forward
            close(model(x), dense(x))
            assert [m._pattern.checked_calls for m in layers] == [1] * 12
            assert [m._pattern.planned_calls for m in layers] == [i] * 12


def test_layers_reading_one_input_share_its_transposed_copy():
    """The query, key and value projections of one LayerNorm output transpose it once; a
    new input, an in-place write to it, or another grad mode makes a new copy; results
    and gradients match nn.Linear's. (Copies counted per layer call: a call planned with a
    copy makes or reuses it before launching.)"""
    from sparsert_triton import nn as snn
    from sparsert_triton import sparsify
    copies = []

    def call(f, x):
        before = snn._columns.copies
        y = f(x)
        copies.append(snn._columns.copies - before)
        return y
    dense = _Block().eval()
    block, _ = sparsify(copy.deepcopy(dense))
    q, k, v = block.q, block.k, block.v
    h = torch.randn(2, 5, IN)
    with torch.no_grad():
        ys = [call(f, h) for f in (q, k, v)]
        assert copies == [1, 0, 0]
        for y, f in zip(ys, (dense.q, dense.k, dense.v)):
            close(y, f(h))
        assert [call(f, h) is not None for f in (q, k, v)] and copies[3:] == [0, 0, 0]
        h.mul_(-2.0)                                    # in place: the version moves on
        close(call(k, h), dense.k(h))
        close(call(k, h.clone()), dense.k(h))           # another tensor, same values
        assert copies[6:] == [1, 1]
        with torch.inference_mode():                    # no version counter: always copied
            hi = torch.randn(2, 5, IN)
            close(call(q, hi), dense.q(hi))
            close(call(k, hi), dense.k(hi))
        assert copies[8:] == [1, 1]
    # a copy made without autograd history is not reused by a call that records one
    hg = torch.randn(2, 5, IN, requires_grad=True)
    with torch.no_grad():
        call(q, hg)
    y = call(k, hg) + call(v, hg)
    assert copies[-2:] == [1, 0]
    y.sum().backward()
    hd = hg.detach().clone().requires_grad_()
    (dense.k(hd) + dense.v(hd)).sum().backward()
    close(hg.grad, hd.grad)
    close(block.k.values.grad, dense.k.weight.grad[dense.k.weight != 0])


def test_row_major_output_is_written_by_the_kernel():
    """output_layout="rows" (default): the layer returns nn.Linear's row-major layout (no
    copy: the kernel writes it), planned after the first call, with the same values and
    gradients as "columns", which returns the transposed view."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT), seed=7),
                                     output_layout="columns")
    assert layer.output_layout == "columns"
    rows = copy.deepcopy(layer)
    rows.output_layout = "rows"
    x = torch.randn(2, 5, IN)
    with torch.no_grad():
        for _ in range(3):
            y, yr = layer(x), rows(x)
            assert y.stride() == (5, 1, 10) and yr.is_contiguous()
            close(yr, y)
    assert (rows._pattern.checked_calls, rows._pattern.planned_calls) == (1, 2)
    ref = layer.to_linear()
    xg = torch.randn(6, IN, requires_grad=True)
    rows(xg).pow(2).sum().backward()
    xd = xg.detach().clone().requires_grad_()
    ref(xd).pow(2).sum().backward()
    close(xg.grad, xd.grad)
    close(rows.values.grad, ref.weight.grad[ref.weight != 0])
    with pytest.raises(ValueError, match="output_layout must be one of"):
        rows.output_layout = "transposed"


def test_row_major_outputs_keep_attention_fused_and_layernorm_copy_free():
    """In a transformer block, "columns" outputs make the attention take the unfused math
    path and the LayerNorms copy; "rows" outputs run the same ops as the dense block plus the
    transposing copies of the inputs (one for query, key and value together)."""
    from torch.profiler import ProfilerActivity, profile
    from sparsert_triton import sparsify
    dense = _Block(h=32, heads=2).eval()
    block, _ = sparsify(copy.deepcopy(dense), output_layout="columns")

    def ops_of(m, x):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            m(x)
        return [e.name for e in prof.events()]
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        block(x)
        columns = ops_of(block, x)
        for m in _layers(block):
            m.output_layout = "rows"
        close(block(x), dense(x))
        rows = ops_of(block, x)
    math = "aten::_scaled_dot_product_attention_math"
    assert math in columns and math not in rows
    assert rows.count("aten::clone") == 4 < columns.count("aten::clone")


def test_forward_reads_a_bias_assigned_outside_the_parameters():
    """The forward reads its parameters from the module's parameter dict; a plain tensor set
    as ``bias`` on a layer built without one lives outside it and is still added."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT, bias=False)))
    x = torch.randn(3, IN)
    with torch.no_grad():
        y0 = layer(x)
        layer.bias = torch.randn(OUT)
        close(layer(x), y0 + layer.bias)
        layer.bias = None
        close(layer(x), y0)


def test_default_output_layout_is_rows():
    """SparseLinear and sparsify return nn.Linear's row-major layout unless told otherwise;
    sparsify takes one layout or a function of (name, module); a bad one is refused by name."""
    from sparsert_triton import sparsify
    lin = pruned(nn.Linear(IN, OUT), seed=8)
    assert SparseLinear(IN, OUT).output_layout == "rows"
    assert SparseLinear.from_linear(lin).output_layout == "rows"
    assert SparseLinear(IN, OUT, output_layout="columns").output_layout == "columns"
    assert SparseLinear.from_linear(lin, output_layout="columns").output_layout == "columns"
    model = nn.Sequential(copy.deepcopy(lin), nn.ReLU(), pruned(nn.Linear(OUT, IN), seed=9))
    layouts = lambda m: [l.output_layout for l in _layers(m)]     # noqa: E731
    assert layouts(sparsify(copy.deepcopy(model))[0]) == ["rows", "rows"]
    assert layouts(sparsify(copy.deepcopy(model), output_layout="columns")[0]) == \
        ["columns", "columns"]
    # the first layer feeds only the second through a ReLU: its columns need no copy there
    chosen = sparsify(copy.deepcopy(model),
                      output_layout=lambda name, m: "columns" if name == "0" else "rows")[0]
    assert layouts(chosen) == ["columns", "rows"]
    x = torch.randn(3, 4, IN)
    with torch.no_grad():
        y = chosen(x)
        assert y.is_contiguous()
        close(y, model(x))
    with pytest.raises(ValueError, match="output_layout must be one of"):
        sparsify(copy.deepcopy(model), output_layout="transposed")
    with pytest.raises(ValueError, match="output_layout must be one of"):
        SparseLinear(IN, OUT, output_layout="row")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("bias", [True, False])
def test_output_layouts_give_equal_results(dtype, bias):
    """"rows" and "columns" run the same kernel and differ only in where it stores: equal
    outputs (one token, several, a batch of sequences, an unbatched vector; with and
    without gradients) and equal gradients, and "rows" is row-major throughout."""
    lin = pruned(nn.Linear(IN, OUT, bias=bias), seed=10).to(dtype)
    rows = SparseLinear.from_linear(lin)
    columns = SparseLinear.from_linear(lin, output_layout="columns")
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    for shape in [(1, IN), (7, IN), (2, 3, IN), (IN,)]:
        x = torch.randn(*shape).to(dtype)
        with torch.no_grad():
            for _ in range(2):                      # the checked call, then the planned one
                yr, yc = rows(x), columns(x)
                assert torch.equal(yr, yc) and yr.is_contiguous()
        close(yr, lin.float()(x.float()).to(dtype), tol)
    xg = torch.randn(2, 3, IN).to(dtype).requires_grad_()
    xc = xg.detach().clone().requires_grad_()
    w = torch.randn(2, 3, OUT).to(dtype)
    (rows(xg) * w).sum().backward()
    (columns(xc) * w).sum().backward()
    assert torch.equal(xg.grad, xc.grad)
    assert torch.equal(rows.values.grad, columns.values.grad)


@pytest.mark.parametrize("mode,copied", [("expand", 0), ("bitmap", 0), ("table", 0),
                                         ("table-split", 1), ("indices", 1)])
def test_kernels_that_take_a_row_major_input_get_it_in_place(monkeypatch, mode, copied):
    """The expand and bitmap (tl.dot) kernels load X as K x columns tiles, coalesced along K
    too, and the one-row table kernel transposes X itself in its launch: a row-major input
    reaches them with no transposing copy; the split table kernel and the unrolled modes,
    which gather rows of X per nonzero, still get the contiguous copy. Results match
    nn.Linear."""
    from sparsert_triton import nn as snn
    from dsl import Schedule
    calls = []
    real = snn._SharedColumns.of
    monkeypatch.setattr(snn._SharedColumns, "of",
                        lambda self, x, Xt: calls.append(Xt.shape) or real(self, x, Xt))
    dense = pruned(nn.Linear(70, 40), 0.7, seed=3).half()
    sched = {"table": Schedule(mode="table", use_dot=False),
             "table-split": Schedule(mode="table", use_dot=False, split_k=2),
             "indices": Schedule(mode="indices")}.get(mode)
    sched = sched or Schedule(mode=mode, rows_per_program=16, chunk=32, use_dot=True)
    layer = SparseLinear.from_linear(dense, schedule=sched)
    x = torch.randn(3, 7, 70).half()                     # 21 tokens, features contiguous
    with torch.no_grad():
        y = layer(x)
        assert len(calls) == copied
        assert layer._pattern.takes_row_major_x(21, torch.float16) == (not copied)
        assert layer._pattern.forward_kernel(layer.values, True).last_plan.transpose_x == \
            (mode == "table")
        close(y, dense.float()(x.float()), tol=2e-2)


def test_row_major_calls_launch_on_the_inputs_address(recorded_launches, monkeypatch):
    """As on a GPU (launches recorded, nothing computed): after its first call, a layer's call
    with an input of the same layout, the same values and the same bias allocates nn.Linear's
    output and launches on the input's and the output's addresses without going through the
    op (``spmm``); anything its checks depend on sends the call back through the op."""
    layer = SparseLinear.from_linear(pruned(nn.Linear(IN, OUT), seed=2))
    through_op = []
    forward = ops.SparsePattern._forward

    def counting(self, *args, **kwargs):
        through_op.append(1)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(ops.SparsePattern, "spmm", counting)

    def launches():
        return sum(len(k.args) for k in recorded_launches.values())

    def fast(call):
        """Whether ``call`` launched once without the op."""
        n, m = launches(), len(through_op)
        y = call()
        assert launches() == n + 1
        return len(through_op) == m, y

    def through_op_then_fast(call):
        """The first call goes through the op; one of the next two is fast again (under
        the recording launchers a new kernel's first planned call still plans its launch)."""
        assert not fast(call)[0]
        assert any(fast(call)[0] for _ in range(2))

    x = torch.randn(2, 3, IN)
    layer.row_major_input = "strided"      # a row-major input of 6 rows read in place
    with torch.no_grad():
        through_op_then_fast(lambda: layer(x))                # checked, compiled, recorded
        for _ in range(2):
            ok, y = fast(lambda: layer(x))
            assert ok and y.shape == (2, 3, OUT) and y.is_contiguous()
        args = next(k for k in recorded_launches.values() if k.args).args[-1]
        assert args[0] == x.data_ptr() and y.data_ptr() in args
        assert layer.bias.data_ptr() in args
        x2 = torch.randn(2, 3, IN)                              # same layout, new address
        assert fast(lambda: layer(x2))[0]
        assert next(k for k in recorded_launches.values() if k.args).args[-1][0] == \
            x2.data_ptr()
        layer.values.mul_(2)                                    # version bump
        through_op_then_fast(lambda: layer(x))
        layer.bias = nn.Parameter(torch.randn(OUT))             # another bias tensor
        through_op_then_fast(lambda: layer(x))
        assert not fast(lambda: layer(x[:, :2]))[0]             # another layout
        layer.output_layout = "columns"
        ok, y = fast(lambda: layer(x))
        assert not ok and not y.is_contiguous()
        layer.output_layout = "rows"
        assert fast(lambda: layer(x))[0]
        with Recording():
            assert not fast(lambda: layer(x))[0]                # dispatch mode: the op
        one = torch.randn(1, IN)                                # one row: read in place
        through_op_then_fast(lambda: layer(one))
        layer.row_major_input = "transpose"                     # part of the key
        through_op_then_fast(lambda: layer(one))
        # copied first (the shared transposing copy), then launched on the copy's address
        through_op_then_fast(lambda: layer(x))
        from sparsert_triton.nn import _columns
        copies = _columns.copies
        counts = {id(k): len(k.args) for k in recorded_launches.values()}
        assert fast(lambda: layer(x))[0] and _columns.copies == copies      # reused
        launched = next(k for k in recorded_launches.values()
                        if len(k.args) > counts.get(id(k), 0)).args[-1][0]
        assert launched == _columns.entry[5].data_ptr() != x.data_ptr()
        x.add_(1.0)                                             # in place: a new copy
        assert fast(lambda: layer(x))[0] and _columns.copies == copies + 1
    assert not fast(lambda: layer(one))[0]                      # gradients: the op's function
