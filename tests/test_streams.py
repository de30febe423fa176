"""``streams``: the kernels of an unrolled variant launched side by side (same code, same result)."""
import pytest
import torch

from dsl import relu
from sparsert_triton import Schedule, sparse_kernel


def _weight(M=40, K=70, density=0.25, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)


def _unrolled(streams):
    # 4 rows per program, a function per row (8 statements): 10 groups of 5 functions,
    # 16 functions per kernel -> several kernels
    return Schedule(mode="values", rows_per_program=4, max_statements_per_function=8,
                    streams=streams)


def test_streams_change_neither_the_code_nor_the_result(device):
    W = _weight()
    X = torch.randn(70, 45, generator=torch.Generator().manual_seed(1)).to(device)
    one = sparse_kernel(lambda W, X: W @ X, schedule=_unrolled(1)).specialize(W)
    four = sparse_kernel(lambda W, X: W @ X, schedule=_unrolled(4)).specialize(W)
    Y1, Y4 = one(X), four(X)
    v1, v4 = one._last, four._last
    assert len(v4.kernels) > 2 and v4.plan.streams == 4 and v1.plan.streams == 1
    assert v1.key == v4.key                       # one cache entry: streams is not in the code
    ref = W.double() @ X.double().cpu()
    torch.testing.assert_close(Y4.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(Y1, Y4)                    # same kernels, same sums


def test_streams_are_validated():
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    with pytest.raises(ValueError, match="streams"):
        Schedule(streams=0)
    with pytest.raises(ValueError, match="streams"):
        plan_for(Schedule(mode="values", streams=64), as_sparse_weight(torch.eye(8)), 16,
                 "float32")
    s = Schedule(mode="values", streams=3)
    assert eval(repr(s), {"Schedule": Schedule}) == s
    w = as_sparse_weight(torch.eye(8))
    assert plan_for(Schedule(mode="values"), w, 16, "float32").streams == 8   # the default
    assert plan_for(Schedule(mode="table"), w, 16, "float32").streams == 1    # one kernel


@pytest.mark.gpu
def test_side_by_side_forks_and_joins_the_callers_stream():
    from sparsert_triton.runtime.launch import side_by_side
    main = torch.cuda.current_stream()
    seen = []
    a = torch.zeros(1 << 20, device="cuda")
    outs = [torch.empty_like(a) for _ in range(5)]

    def launch(i):
        seen.append(torch.cuda.current_stream())
        torch.mul(a + i, 1.0, out=outs[i])

    a.fill_(2.0)                  # queued on the caller's stream before the fork
    side_by_side([lambda i=i: launch(i) for i in range(5)], a.device, 3)
    assert torch.cuda.current_stream() == main
    assert len({s.stream_id for s in seen}) == 3 and main not in seen
    for i, o in enumerate(outs):  # read on the caller's stream: complete after the join
        assert torch.all(o == 2.0 + i)


@pytest.mark.gpu
def test_streams_under_cuda_graph_capture():
    W = _weight(96, 200, 0.1, seed=2)
    k = sparse_kernel(lambda W, X: relu(W @ X), schedule=_unrolled(3)).specialize(W)
    X = torch.randn(200, 300, device="cuda")
    k(X)                                            # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        Y = k(X)
    for seed in (3, 4):
        X.copy_(torch.randn(200, 300, generator=torch.Generator().manual_seed(seed)))
        graph.replay()
        ref = torch.relu(W.double() @ X.double().cpu())
        torch.testing.assert_close(Y.double().cpu(), ref, rtol=1e-5, atol=1e-5)


class _FakeCuda:
    """Stands in for ``torch.cuda``'s stream API: records the order of stream operations."""

    def __init__(self):
        self.log, self.current = [], None
        self.current = self.Stream(0, name="main")

    def current_device(self):
        return 0

    def current_stream(self, index):
        return self.current

    def stream(self, s):
        fake = self

        class _Ctx:
            def __enter__(self):
                self.prev, fake.current = fake.current, s

            def __exit__(self, *exc):
                fake.current = self.prev
        return _Ctx()

    def Stream(self, index, name=None):
        fake = self

        class _S:
            def __init__(self):
                self.name = name or f"side{sum(1 for e in fake.log if e[0] == 'new')}"
                fake.log.append(("new", self.name))

            def record_event(self):
                fake.log.append(("record", self.name))
                return self.name

            def wait_event(self, ev):
                fake.log.append(("wait", self.name, ev))
        return _S()


def test_side_by_side_orders_fork_launches_and_join():
    """The ordering logic on the CPU: side streams wait on the caller's stream before any
    launch, launches go round-robin, the caller waits on every side stream used, and the
    caller's stream is current again afterwards."""
    from sparsert_triton.runtime.launch import side_by_side
    cuda = _FakeCuda()
    main = cuda.current
    cuda.log.clear()
    side_by_side([lambda i=i: cuda.log.append(("launch", i, cuda.current.name))
                  for i in range(5)], torch.device("cuda"), 3, cuda=cuda)
    log = [e for e in cuda.log if e[0] != "new"]
    assert log[0] == ("record", "main")
    assert log[1:4] == [("wait", s, "main") for s in ("side0", "side1", "side2")]
    assert [e[2] for e in log[4:9]] == ["side0", "side1", "side2", "side0", "side1"]
    assert log[9:] == [e for s in ("side0", "side1", "side2")
                       for e in (("record", s), ("wait", "main", s))]
    assert cuda.current is main
    n = len([e for e in cuda.log if e[0] == "new"])
    side_by_side([lambda: None] * 2, torch.device("cuda"), 8, cuda=cuda)   # pool reused
    assert len([e for e in cuda.log if e[0] == "new"]) == n
