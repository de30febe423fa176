"""The per-call fast path (CallPlan): a call of a new layout is checked and planned; a call of
a planned layout never runs with another layout's decisions."""
import os

import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.runtime import direct
from sparsert_triton.runtime.callplan import call_key

M, K = 20, 16
DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.usefixtures("on_test_device")   # tensors on the test device


def weight(seed=0, density=0.3):
    with torch.device("cpu"):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(M, K, generator=g)
        return W * (torch.rand(M, K, generator=g) < density)


def reference(W, X):
    return W.double().to(X.device) @ X.double()


def close(Y, ref, tol=1e-5):
    torch.testing.assert_close(Y.double(), ref, rtol=tol, atol=tol)


def test_strides_change_takes_a_new_plan():
    """X's strides are baked into the unrolled code: a call with the same shape and other
    strides must get its own variant, not the planned one."""
    W = weight()
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="values")).specialize(W)
    X = torch.randn(K, 9)
    Xt = torch.randn(9, K).t()                 # same shape, strides (1, K)
    for _ in range(2):
        close(k(X), reference(W, X))
        close(k(Xt), reference(W, Xt))
        close(k(X[:, ::2]), reference(W, X[:, ::2]))
    assert len(k._calls) == 3


def test_dtype_change_takes_a_new_plan():
    W = weight(1)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W)
    X = torch.randn(K, 6)
    close(k(X), reference(W, X))
    Y64 = k(X.double())
    assert Y64.dtype == torch.float64                   # output dtype follows X
    close(Y64, reference(W, X))
    assert k(X).dtype == torch.float32
    with pytest.raises(TypeError, match="X must be float32"):
        k(X.to(torch.int32))


def test_device_change_is_checked_again():
    """A planned CPU layout does not let a tensor of another device through."""
    W = weight(2)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W)
    X = torch.randn(K, 4)
    k(X)
    k(X)
    with pytest.raises(ValueError, match="X is on meta"):
        k(X.to("meta"))


@pytest.mark.skipif(DEV != "cpu", reason="the interpreter runs on the CPU")
def test_interpreter_switched_off_is_checked_again(monkeypatch):
    W = weight(3)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W)
    X = torch.randn(K, 4)
    k(X)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="sparse kernels run on CUDA"):
        k(X)


def test_numbers_are_read_and_checked_on_every_call():
    W = weight(4)
    k = sparse_kernel(lambda W, X, a: W @ X * a).specialize(W)
    X = torch.randn(K, 5)
    close(k(X, 2.0), 2.0 * reference(W, X))
    close(k(X, -3.0), -3.0 * reference(W, X))           # same plan, the new value
    assert len(k._calls) == 1
    with pytest.raises(ValueError, match="a must be finite"):
        k(X, float("nan"))


def test_operand_layout_change_takes_a_new_plan():
    W = weight(5)
    k = sparse_kernel(lambda W, X, b: W @ X + b).specialize(W)
    X = torch.randn(K, 7)
    row, full = torch.randn(M), torch.randn(M, 7)
    close(k(X, row), reference(W, X) + row.double()[:, None])
    close(k(X, full), reference(W, X) + full.double())
    close(k(X, full.t().contiguous().t()), reference(W, X) + full.double())
    with pytest.raises(ValueError, match="b has shape"):
        k(X, torch.randn(M + 1))
    assert len(k._calls) == 3


def test_out_calls_are_checked_every_time():
    W = weight(6)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W)
    X = torch.randn(K, 3)
    out = torch.empty(M, 3)
    k(X, out=out)
    close(out, reference(W, X))
    assert len(k._calls) == 0
    with pytest.raises(TypeError, match="out must be torch.float32"):
        k(X, out=torch.empty(M, 3, dtype=torch.float64))


def test_key_refuses_what_it_cannot_describe():
    X = torch.randn(K, 3)
    assert call_key(X, ()) is not None
    assert call_key(X.to_sparse(), ()) is None
    assert call_key(X, (object(),)) is None
    assert call_key(X, (True,)) is None
    assert call_key(X, (1.5,)) == call_key(X, (2.5,))
    assert call_key(X, ()) != call_key(X.t().contiguous().t(), ())


def test_planned_launches_take_each_calls_tensors_and_numbers(recorded_launches):
    compiled = recorded_launches
    k = sparse_kernel(lambda W, X, b, a: (W @ X + b) * a).specialize(weight(8))
    X, b = torch.randn(K, 8), torch.randn(M)
    for i in range(4):
        k(X, b, 2.0 + i)
    (kernel,) = compiled.values()
    assert len(kernel.args) == 4 and len(k._calls) == 1
    last = kernel.args[-1]
    floats = [a for a in last if type(a) is float]
    # planned launches pass each pointer as its address (X's first)
    assert last[0] == X.data_ptr() and type(last[0]) is int
    assert b.data_ptr() in last and floats == [5.0]
    b2 = torch.randn(M)
    k(X, b2, 1.0)
    assert b2.data_ptr() in kernel.args[-1] and b.data_ptr() not in kernel.args[-1]


def test_compiled_kernels_are_reused_only_for_the_same_alignment(recorded_launches):
    """As on a GPU (the launcher on, compiled kernels kept per specialisation key): the planned
    call launches the kernel compiled for its pointers' alignment, and a call whose X is not
    16-byte aligned gets the kernel of that specialisation."""
    compiled = recorded_launches
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="table")).specialize(weight(7))
    base = torch.randn(K * 64 + 1)
    aligned = base[:K * 64].view(K, 64)
    shifted = base[1:].view(K, 64)                     # same layout, 4 bytes off
    assert aligned.data_ptr() % 16 == 0 and shifted.data_ptr() % 16 != 0
    for X in (aligned, aligned, shifted, aligned, shifted):
        k(X)
    assert len(compiled) == 2 and len(k._calls) == 1
    by_alignment = {ks[0][1]: kern for ks, kern in compiled.items()}   # X's alignment fact
    assert by_alignment[True].xs == [aligned.data_ptr()] * 3
    assert by_alignment[False].xs == [shifted.data_ptr()] * 2


@pytest.mark.gpu
def test_planned_calls_on_the_gpu_launch_compiled_kernels_directly():
    """On a GPU the planned calls launch the compiled kernels themselves, for each pointer
    alignment, and the same plan is captured by a CUDA graph."""
    W = weight(9)
    for schedule in (Schedule(mode="table"), Schedule(mode="values", rows_per_program=4)):
        k = sparse_kernel(lambda W, X, b: W @ X + b, schedule=schedule).specialize(W)
        base, b = torch.randn(K * 300 + 4, device="cuda"), torch.randn(M, device="cuda")
        for X in (base[:K * 300].view(K, 300), base[1:K * 300 + 1].view(K, 300),
                  base[:K * 300].view(300, K).t()):
            for _ in range(3):
                Y = k(X, b)
            close(Y, reference(W, X) + b.double()[:, None])
        assert len(k._calls) == 2 and all(p.compiled[False] for p in k._calls.values())
        X = base[:K * 300].view(K, 300)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            k(X, b)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            Yg = k(X, b)
        X.copy_(torch.randn_like(X))
        graph.replay()
        torch.cuda.synchronize()
        close(Yg, reference(W, X) + b.double()[:, None])


@pytest.mark.parametrize("mode", ["values", "table", "blocks"])
def test_rows_out_calls_are_planned_apart_and_write_row_major_outputs(mode):
    """``rows_out=True`` gives Y (M, N) whose transpose is contiguous, in its own plan: a
    plain call of the same layout still gets a contiguous Y; both right, on every call."""
    W = weight(seed=5)
    k = sparse_kernel(lambda W, X, b: W @ X + b, schedule=Schedule(mode=mode)).specialize(W)
    X, b = torch.randn(K, 7), torch.randn(M)
    ref = reference(W, X) + b.double()[:, None]
    for _ in range(3):
        Yr, Y = k(X, b, rows_out=True), k(X, b)
        assert Yr.t().is_contiguous() and Y.is_contiguous()
        close(Yr, ref)
        close(Y, ref)
    assert len(k._calls) == 2
    with pytest.raises(ValueError, match="rows_out=True is for matrix kernels"):
        k(X, b, out=torch.empty(M, 7), rows_out=True)


def conv_weight(seed=0, C_out=6, C_in=4):
    with torch.device("cpu"):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(C_out, C_in, 3, 3, generator=g)
        return W * (torch.rand(W.shape, generator=g) < 0.4)


@pytest.mark.parametrize("conv_input", ["padded", "masked"])
def test_convolutions_reading_a_copy_of_x_are_planned_on_the_copy(recorded_launches,
                                                                  conv_input):
    """A convolution whose kernel reads a copy of X (``padded``: the zero-padded X;
    ``masked``: X made contiguous) makes the copy on every planned call and launches the
    compiled kernel directly on the copy's address, with the copy's strides and size."""
    from dsl import conv2d
    compiled = recorded_launches
    W = conv_weight(1)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode="table", conv_input=conv_input)).specialize(W)
    X = torch.randn(2, 5, 7, 4).permute(0, 3, 1, 2)      # (2, 4, 5, 7), channels last
    for _ in range(4):
        k(X)
    assert len(k._calls) == 1
    (plan,) = k._calls.values()
    assert plan.prepared and plan.direct
    conv = [kern for kern in compiled.values()                  # not the padding kernel
            if tuple(kern.args[-1][-len(plan.sizes):]) == plan.sizes]
    assert len(conv) == 1 and len(conv[0].args) == 4
    H, W_ = (7, 9) if conv_input == "padded" else (5, 7)
    for args in conv[0].args[2:]:   # the direct launches (the second call found the kernel)
        assert type(args[0]) is int and args[0] != X.data_ptr()
        assert tuple(args[-13:-7]) == (4 * H * W_, H * W_, W_, 1, H, W_)


def test_planned_padded_convolutions_compute_each_calls_input():
    """Planned calls of a padded convolution read each call's X (through its fresh copy)."""
    from dsl import conv2d
    W = conv_weight(2)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode="table", conv_input="padded")).specialize(W)
    for seed in range(3):
        X = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(seed)).to(DEV)
        ref = torch.nn.functional.conv2d(X.double(), W.double().to(X.device), padding=1)
        close(k(X), ref)
    assert len(k._calls) == 1
