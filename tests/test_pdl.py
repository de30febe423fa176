"""``pdl``: programmatic dependent launch (a code field: each kernel waits for the one before)."""
import pytest
import torch

from dsl import conv2d, relu
from sparsert_triton import Schedule, sparse_kernel
from sparsert_triton.compiler.canonicalise import plan_for, with_device
from sparsert_triton.weights import as_sparse_weight


def test_the_plan_sets_pdl_for_hopper_and_newer_only():
    w = as_sparse_weight(torch.eye(8))
    for mode in ("values", "table", "blocks"):
        plan = plan_for(Schedule(mode=mode), w, 16, "float32")
        assert with_device(plan, "sm_90").pdl and with_device(plan, "sm_100").pdl
        assert not with_device(plan, "sm_80").pdl
        assert not with_device(plan, "interpreter").pdl
        assert not with_device(with_device(plan, "sm_90"), "sm_86").pdl


def test_a_saved_schedule_with_pdl_loads_and_the_plan_decides():
    """``pdl`` is no longer a Schedule field (the plan sets it per device): a saved dict that
    holds it loads, whatever it held; the constructor refuses it by name."""
    from dsl.schedule import as_schedule
    for v in ("auto", True, False):
        assert as_schedule({"mode": "values", "pdl": v}) == Schedule(mode="values")
    with pytest.raises(ValueError, match="pdl"):
        as_schedule({"mode": "values", "pdl": "yes"})
    with pytest.raises(TypeError, match="pdl"):
        Schedule(pdl=True)


def test_the_interpreter_runs_without_pdl(device):
    if device != "cpu":
        pytest.skip("the interpreter's behaviour")
    W = torch.randn(8, 12) * (torch.rand(8, 12) < 0.5)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W)
    X = torch.randn(12, 20)
    torch.testing.assert_close(k(X), W @ X, rtol=1e-5, atol=1e-5)
    assert not k.last_plan.pdl and "gdc_wait" not in k.source


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["values", "table"])
def test_pdl_on_the_gpu_matches_and_captures(mode):
    """On a Hopper GPU pdl is on by default; the padded copy and the kernel both launch as
    dependent launches, eagerly and in a CUDA graph, after a kernel that writes their input."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs compute capability 9.0+")
    g = torch.Generator().manual_seed(0)
    W = torch.randn(32, 16, 3, 3, generator=g) * (torch.rand(32, 16, 3, 3, generator=g) < 0.2)
    b = torch.randn(32).cuda()
    X0 = torch.randn(2, 16, 14, 14, generator=g).cuda()
    k = sparse_kernel(lambda W, X, b: relu(conv2d(W, X, padding=1) + b),
                      schedule=Schedule(mode=mode, conv_input="padded")).specialize(W)
    ref = torch.relu(torch.nn.functional.conv2d(X0.double(), W.double().cuda(), None, 1, 1)
                     + b.double()[None, :, None, None])
    X = torch.empty_like(X0)

    def step():
        X.copy_(X0 * 1.0)          # the kernel before: writes the input
        return k(X, b)
    Y = step()
    assert k.last_plan.pdl and "gdc_wait()" in k.source
    torch.testing.assert_close(Y.double(), ref, rtol=1e-4, atol=1e-4)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        Yg = step()
    X0.mul_(-1.0)
    ref = torch.relu(torch.nn.functional.conv2d(X0.double(), W.double().cuda(), None, 1, 1)
                     + b.double()[None, :, None, None])
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(Yg.double(), ref, rtol=1e-4, atol=1e-4)
