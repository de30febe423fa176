"""The one-row table kernel on a row-major X (``Plan.transpose_x``): X of strides (1, K), the
(K, N) view of an (N, K) input, is transposed by the kernel itself in the same launch
(programs by ticket: the transposing shares first, the rows once all are stored). Results
match the reference for odd sizes, dtypes, epilogues and every row-kernel option; the plan
transposes only where X is row-major and the kernel is the one-row one; the launch grid holds
both kinds of programs; ``SparseLinear`` hands such a kernel its input with no copy up to
``transposed.MAX_N`` columns, and copies a wider one. On the GPU: calls in a row reuse the
kept counters (each call leaves them zero), two kernels share the kept XT, and a captured
call replays."""
import pytest
import torch
from torch import nn

from dsl import Schedule, clamp, gelu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.render import transposed
from sparsert_triton.runtime.launch import grids

from test_blocks import TOL, _fc, _rel, _weight

pytestmark = pytest.mark.usefixtures("on_test_device")

ROWS = Schedule(mode="table", use_dot=False)


def _gelu_res(W, X, scale, residual):
    return clamp(gelu(W @ X * scale), -2.0, None) + residual


def _rows_major(N, K, dtype, seed=0):
    """X (K, N) as the transposed view of a contiguous (N, K) tensor: strides (1, K)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, generator=g, device="cpu").to(dtype).to(torch.get_default_device()).t()


@pytest.mark.parametrize("M,K,N,extra", [
    (37, 29, 21, {}),                                              # nothing divides
    (16, 100, 70, dict(block_n=16, rows_per_program=2)),           # 5 column tiles
    (20, 300, 7, dict(chunk=4, prefetch_tail=True, prefetch_x=False)),
    (33, 70, 40, dict(chunk=8, prefetch_tail=True, prefetch_x=True, row_order="given")),
    (9, 1, 5, {}),                                                 # K = 1
])
def test_row_major_x_matches_the_reference(M, K, N, extra):
    k = sparse_kernel(_fc).specialize(_weight(M, K, 0.3, torch.float32, seed=M),
                                      Schedule(mode="table", use_dot=False, **extra))
    X = _rows_major(N, K, torch.float32, seed=K)
    b = torch.randn(M)
    Y = k(X, b)
    assert k.last_plan.transpose_x == (K > 1)
    assert _rel(Y, k.reference(X, b)) < TOL[torch.float32]
    assert torch.equal(k(X, b), Y)                 # the planned call: the same sums
    assert torch.equal(k(X.contiguous(), b), Y)    # the plain kernel: the same order too
    assert not k.last_plan.transpose_x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_row_major_x_in_every_dtype_with_an_epilogue(dtype):
    k = sparse_kernel(_gelu_res).specialize(_weight(45, 60, 0.25, dtype, seed=4), ROWS)
    X = _rows_major(19, 60, dtype, seed=5)
    residual = torch.randn(45, 19).to(dtype)
    Y = k(X, 0.5, residual)
    assert k.last_plan.transpose_x and Y.dtype == dtype
    assert _rel(Y, k.reference(X, 0.5, residual)) < TOL[dtype]


def test_only_a_row_major_x_of_the_one_row_kernel_is_transposed():
    W = _weight(24, 40, 0.3, torch.float32, seed=6)
    b = torch.randn(24)
    X = _rows_major(12, 40, torch.float32)
    for sched, expected in ((ROWS, True), (ROWS.replace(split_k=2), False),
                            (Schedule(mode="table", use_dot=True, rows_per_program=16,
                                      chunk=16, block_n=16), False),
                            (Schedule(mode="indices"), False)):
        if sched.use_dot is True and X.device.type == "cpu":
            sched = sched.replace(use_dot=False, rows_per_program=1)
            expected = True
        k = sparse_kernel(_fc).specialize(W, sched)
        Y = k(X, b)
        assert k.last_plan.transpose_x == expected, sched
        assert _rel(Y, k.reference(X, b)) < TOL[torch.float32]
    k = sparse_kernel(_fc).specialize(W, ROWS)
    for x in (X.contiguous(), X[:, :1], X[:, ::2].contiguous()):   # columns, N = 1
        k(x, b)
        assert not k.last_plan.transpose_x
    from sparsert_triton.compiler.pipeline import transposes_x
    plan = k.plan(12, "float32")
    assert transposes_x(plan, 12, (1, 40), 40)
    assert not transposes_x(plan, 2**26, (1, 40), 40)     # XT past 32-bit offsets: in place
    sliced = torch.randn(12, 80).to(X.device)[:, ::2].t()          # K-stride 2: not row-major
    assert _rel(k(sliced, b), k.reference(sliced, b)) < TOL[torch.float32]
    assert not k.last_plan.transpose_x


def test_one_launch_holds_the_shares_and_the_rows():
    k = sparse_kernel(_fc).specialize(_weight(6, 300, 0.1, torch.float32, seed=7),
                                      ROWS.replace(block_n=32))
    X = _rows_major(70, 300, torch.float32)
    k(X, torch.randn(6))
    v = k._last
    plan, groups = v.plan, v.kernels[0][1]
    tk = transposed.tile_k(300, plan)
    assert tk & (tk - 1) == 0 and tk * plan.block_n <= transposed.ELEMENTS_PER_WARP * \
        plan.num_warps
    assert v.shares == -(-300 // tk)
    tiles = -(-70 // 32)
    assert [g for _, g in grids(v, 70)] == [((v.shares + groups) * tiles, 1, 1)]
    assert transposed.tile_k(3, plan) == 4                         # at most K rounded up


def test_sparse_linear_hands_the_transposing_kernel_its_input():
    from sparsert_triton import nn as snn
    torch.manual_seed(0)
    dense = nn.Linear(96, 40)
    with torch.no_grad():
        dense.weight.mul_(torch.rand_like(dense.weight) < 0.2)
    layer = snn.SparseLinear.from_linear(dense, schedule=ROWS)
    copies = snn._columns.copies
    x = torch.randn(3, 11, 96)
    with torch.no_grad():
        for _ in range(2):
            y = layer(x)
            assert _rel(y, dense(x).double()) < TOL[torch.float32]
    assert snn._columns.copies == copies
    assert layer._pattern.takes_row_major_x(33, torch.float32)
    # above MAX_N columns the layer copies (less GPU time than the kernel's transpose); the
    # kernel called directly on a row-major X still transposes it
    wide = torch.randn(transposed.MAX_N + 5, 96)
    assert not layer._pattern.takes_row_major_x(wide.shape[0], torch.float32)
    with torch.no_grad():
        y = layer(wide)
    assert _rel(y, dense(wide).double()) < TOL[torch.float32]
    assert snn._columns.copies == copies + 1
    k = layer._pattern.forward_kernel(layer.values, True)
    assert not k.last_plan.transpose_x
    k(wide.t(), layer.bias)
    assert k.last_plan.transpose_x


def test_a_captured_planned_call_holds_its_buffers_until_the_launch(recorded_launches,
                                                                    monkeypatch):
    """Under capture a planned call makes its XT and its zeroed counters for itself (not the
    kept ones): both are still referenced when the kernel is queued, so the counters cannot
    be given XT's memory (a stand-in capture on the CPU; launches recorded)."""
    import weakref
    from sparsert_triton.runtime import callplan, launch
    made = []

    def keeping(fn):
        def wrapped(*args):
            out = fn(*args)
            made.append((weakref.ref(out[0]), args[-1]))
            return out
        return wrapped
    monkeypatch.setattr(launch, "scratch", keeping(launch.scratch))
    monkeypatch.setattr(launch, "counters", keeping(launch.counters))
    alive = []
    real_run = callplan.run_compiled
    monkeypatch.setattr(callplan, "run_compiled", lambda *a: alive.append(
        [r() is not None for r, _ in made]) or real_run(*a))
    k = sparse_kernel(_fc).specialize(_weight(12, 40, 0.3, torch.float32, seed=8), ROWS)
    X, b = _rows_major(9, 40, torch.float32), torch.randn(12)
    for _ in range(2):     # checked (plans the call), planned (keeps the compiled launch)
        k(X, b)
    plan = next(iter(k._calls.values()))
    assert plan.variant.plan.transpose_x
    plan.cuda = plan.watches_capture = True            # as on a GPU, under capture
    monkeypatch.setattr(callplan, "capturing", lambda: True)
    made.clear()
    k(X, b)
    assert [cap for _, cap in made] == [True, True] and alive == [[True, True]]


@pytest.mark.gpu
def test_calls_in_a_row_share_the_kept_counters_and_scratch():
    """Eager calls of two transposing kernels in turn, many times: each call leaves the kept
    counters zero for the next and overwrites the other's XT, and every result is its own."""
    ka = sparse_kernel(_fc).specialize(_weight(768, 768, 0.1, torch.float32, seed=1), ROWS)
    kb = sparse_kernel(_fc).specialize(_weight(3072, 768, 0.1, torch.float32, seed=2), ROWS)
    xs = [_rows_major(n, 768, torch.float32, seed=n) for n in (128, 1024, 77)]
    ba, bb = torch.randn(768, device="cuda"), torch.randn(3072, device="cuda")
    first = [(ka(x, ba), kb(x, bb)) for x in xs]
    for ya, yb in first[:1]:
        assert _rel(ya, ka.reference(xs[0], ba)) < TOL[torch.float32]
        assert _rel(yb, kb.reference(xs[0], bb)) < TOL[torch.float32]
    for _ in range(20):
        for x, (ya, yb) in zip(xs, first):
            assert torch.equal(ka(x, ba), ya) and torch.equal(kb(x, bb), yb)
    assert ka.last_plan.transpose_x


@pytest.mark.gpu
def test_captured_transposing_calls_replay():
    """Under capture each call takes its XT and zeroed counters from the graph's pool (not
    the kept workspace); a graph of several calls of two kernels replays the eager results,
    with eager calls between the replays."""
    from sparsert_triton.runtime import workspace
    ka = sparse_kernel(_fc).specialize(_weight(512, 640, 0.1, torch.float32, seed=3), ROWS)
    kb = sparse_kernel(_fc).specialize(_weight(640, 512, 0.1, torch.float32, seed=5), ROWS)
    x = _rows_major(200, 640, torch.float32, seed=4)
    ba, bb = torch.randn(512, device="cuda"), torch.randn(640, device="cuda")
    eager = ka(x, ba)
    chained = kb(eager.t().contiguous().t(), bb)       # (512, 200) row-major again
    kept = dict(workspace._kept.views), dict(workspace._kept.counters)
    g = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        with torch.cuda.graph(g):
            ys = []
            for _ in range(4):
                y = ka(x, ba)
                ys.append((y, kb(y.t().contiguous().t(), bb)))
    torch.cuda.current_stream().wait_stream(side)
    assert (dict(workspace._kept.views), dict(workspace._kept.counters)) == kept
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        assert all(torch.equal(y, eager) and torch.equal(z, chained) for y, z in ys)
        assert torch.equal(ka(x, ba), eager)
