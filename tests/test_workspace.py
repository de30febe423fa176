"""The scratch kept between calls (``runtime.workspace``): one buffer per device, stream and
thread, grown to the largest scratch asked of it, never while a stream is captured or above
MAX_BYTES; expand-mode layers sharing it give their own results in any order of calls; on
the GPU, eager calls beside a replayed CUDA graph."""
import contextlib
import gc
import os
import threading
import weakref

import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.runtime import workspace

from test_blocks import TOL, _fc, _rel, _weight

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_workspace():
    workspace.release()
    yield
    workspace.release()


def test_one_buffer_serves_every_size_and_grows():
    a, pa = workspace.scratch(100, torch.float16, CPU, None)
    assert a.shape == (100,) and a.dtype == torch.float16 and pa == a.data_ptr()
    assert workspace.scratch(100, torch.float16, CPU, None)[1] == pa     # kept
    b, pb = workspace.scratch(30, torch.float32, CPU, None)               # fits: same memory
    assert b.dtype == torch.float32 and pb == pa and workspace.kept_bytes() == 200
    c, _ = workspace.scratch(1000, torch.float16, CPU, None)              # grows
    assert workspace.kept_bytes() == 2000 and c.numel() == 1000
    assert workspace.scratch(100, torch.float16, CPU, None)[1] == c.data_ptr()
    workspace.release()
    assert workspace.kept_bytes() == 0


def test_streams_and_threads_get_their_own_buffers():
    _, p0 = workspace.scratch(64, torch.float16, CPU, None)
    _, p1 = workspace.scratch(64, torch.float16, CPU, 7)                  # another stream
    assert p0 != p1 and workspace.kept_bytes() == 2 * 128
    got = []

    def other():
        got.append((workspace.kept_bytes(), workspace.scratch(64, torch.float16, CPU, None)[1],
                    workspace.kept_bytes(), weakref.ref(workspace._kept.buffers[(CPU, None)])))
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert got[0][0] == 0 and got[0][2] == 128 and got[0][1] not in (p0, p1)
    gc.collect()
    assert got[0][3]() is None                        # the thread's buffer went with it
    assert workspace.kept_bytes() == 2 * 128          # this thread's, unchanged


def test_large_scratch_and_captured_streams_are_not_kept(monkeypatch):
    big = workspace.MAX_BYTES // 2 + 1
    t1, _ = workspace.scratch(big, torch.float16, CPU, None)
    assert t1.numel() == big and workspace.kept_bytes() == 0
    workspace.scratch(64, torch.float16, CPU, 5)
    assert workspace.kept_bytes() == 128
    monkeypatch.setattr(workspace, "_is_capturing", lambda: True)
    _, p = workspace.scratch(64, torch.float16, CPU, 5)       # a capture: its own tensor
    _, q = workspace.scratch(64, torch.float16, CPU, 5)
    kept = workspace._kept.views[(CPU, 5, torch.float16, 64)][1]
    assert p != kept and q != kept and workspace.kept_bytes() == 128


def test_counters_are_zeros_kept_per_stream(monkeypatch):
    """The expand kernel's counters: zeros kept per (device, stream) (the kernel leaves them
    zero), grown by a new zeroed buffer; new zeros per call on the CPU (stream None: the
    interpreter) and under capture."""
    c, p = workspace.counters(10, CPU, 3)
    assert c.dtype == torch.int32 and c.numel() >= 10 and not c.any() and p == c.data_ptr()
    assert workspace.counters(5, CPU, 3)[1] == p                         # kept
    assert workspace.counters(10, CPU, 4)[1] != p                        # per stream
    kept = workspace.kept_bytes()
    big, q = workspace.counters(5000, CPU, 3)                            # grows
    assert big.numel() >= 5000 and not big.any() and q != p
    assert workspace.kept_bytes() == kept + 4 * (big.numel() - c.numel())
    a, pa = workspace.counters(10, CPU, None)
    a += 1
    b, pb = workspace.counters(10, CPU, None)
    assert not b.any() and workspace.kept_bytes() == kept + 4 * (big.numel() - c.numel())
    monkeypatch.setattr(workspace, "_is_capturing", lambda: True)
    assert workspace.counters(10, CPU, 3)[1] != q
    assert workspace.counters(10, CPU, 3, captured=False)[1] == q      # the caller asked
    workspace.release()
    assert workspace.kept_bytes() == 0


def test_blas_handle_is_made_outside_capture_only(monkeypatch):
    """create_blas_handle asks torch for the handle on the layer's device, once per thread
    and device, and never while the stream is captured (creating one there is what fails a
    capture)."""
    asked = []
    monkeypatch.setattr(workspace._kept, "blas", set())
    monkeypatch.setattr(torch.cuda, "device", lambda d: asked.append(("device", d)) or
                        contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_blas_handle", lambda: asked.append("handle"))
    monkeypatch.setattr(workspace, "_is_capturing", lambda: False)
    workspace.create_blas_handle(torch.device("cuda", 1))
    assert asked == [("device", torch.device("cuda", 1)), "handle"]
    workspace.create_blas_handle(torch.device("cuda", 1))              # made already
    assert len(asked) == 2
    monkeypatch.setattr(workspace, "_is_capturing", lambda: True)
    workspace.create_blas_handle(torch.device("cuda", 0))
    assert len(asked) == 2
    monkeypatch.setattr(workspace, "_is_capturing", lambda: False)
    workspace.create_blas_handle(torch.device("cuda", 0))
    assert asked[2:] == [("device", torch.device("cuda", 0)), "handle"]


@pytest.mark.usefixtures("on_test_device")
def test_expand_layers_sharing_the_scratch_keep_their_results():
    """Two expand-mode kernels of different sizes called in turn: each call's expansion
    overwrites what the other wrote, and every result is still its own product."""
    sched = Schedule(mode="expand", rows_per_program=16, chunk=32)
    ka = sparse_kernel(_fc).specialize(_weight(40, 96, 0.3, torch.float16, seed=1), sched)
    kb = sparse_kernel(_fc).specialize(_weight(70, 64, 0.5, torch.float16, seed=2), sched)
    xa, xb = torch.randn(96, 20).half(), torch.randn(64, 33).half()
    ba, bb = torch.randn(40).half(), torch.randn(70).half()
    first = [ka(xa, ba), kb(xb, bb)]
    for _ in range(2):
        assert torch.equal(ka(xa, ba), first[0]) and torch.equal(kb(xb, bb), first[1])
    assert _rel(first[0], ka.reference(xa, ba)) < TOL[torch.float16]
    assert _rel(first[1], kb.reference(xb, bb)) < TOL[torch.float16]
    if xa.device.type == "cpu":
        # one buffer, the larger scratch of the two (48 x 96 and 80 x 64 halves)
        assert workspace.kept_bytes() == 2 * max(48 * 96, 80 * 64)


@pytest.mark.gpu
def test_eager_calls_beside_a_graph_replay_on_another_stream():
    """A captured expand call allocates its scratch in the graph's pool; eager calls of
    another layer on the main stream, while the graph replays on a side stream, never race
    with it."""
    sched = Schedule(mode="expand")
    ka = sparse_kernel(_fc).specialize(_weight(512, 512, 0.8, torch.float16, seed=3), sched)
    kb = sparse_kernel(_fc).specialize(_weight(768, 512, 0.8, torch.float16, seed=4), sched)
    xa, xb = (torch.randn(512, 256, device="cuda").half() for _ in range(2))
    ba, bb = torch.randn(512, device="cuda").half(), torch.randn(768, device="cuda").half()
    ref_a, ref_b = ka(xa, ba), kb(xb, bb)
    side = torch.cuda.Stream()
    kept = dict(workspace._kept.views)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=side):
        ya = ka(xa, ba)
    assert workspace._kept.views == kept     # the capture took nothing from the workspace
    outs = []
    for _ in range(20):
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            g.replay()
        outs.append(kb(xb, bb))
        torch.cuda.current_stream().wait_stream(side)
        assert torch.equal(ya, ref_a)
    torch.cuda.synchronize()
    assert all(torch.equal(y, ref_b) for y in outs)


@pytest.mark.gpu
def test_sparse_linears_captured_first_after_eager_calls():
    """Half-precision SparseLinear layers in the expand mode, called eagerly (one launch per
    call) and then captured in a CUDA graph with no capture before it: after the first eager
    call the call plan holds the captured call's launches too (compiled and loaded outside
    any capture), the capture succeeds, and its replays give the eager outputs bit for bit
    (the two forms sum the same tiles in the same order)."""
    from sparsert_triton.nn import SparseLinear
    torch.manual_seed(0)
    layers = []
    for i, o in ((512, 1024), (1024, 512)):
        lin = torch.nn.Linear(i, o, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            lin.weight.mul_((torch.rand_like(lin.weight, dtype=torch.float32) >= 0.8).half())
        layers.append(SparseLinear.from_linear(lin, schedule=Schedule(mode="expand")).eval())
    model = torch.nn.Sequential(layers[0], torch.nn.GELU(), layers[1])
    x = torch.randn(256, 512, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager = model(x)
        assert torch.equal(model(x), eager)
        plans = [e[3] for m in layers for e in m._pattern.rows_calls.values()]
        assert plans and all(p.compiled[True] and p.compiled[False] for p in plans)
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            with torch.cuda.graph(g):
                y = model(x)
        torch.cuda.current_stream().wait_stream(side)
        for _ in range(3):
            g.replay()
            torch.cuda.synchronize()
            assert torch.equal(y, eager)


CUBLAS_AFTER_SPARSE = r"""
import json, torch
from sparsert_triton.nn import SparseLinear
torch.manual_seed(0)
lin = torch.nn.Linear(256, 512, device="cuda", dtype=torch.float16)
with torch.no_grad():
    lin.weight.mul_((torch.rand_like(lin.weight, dtype=torch.float32) >= 0.9).half())
    layer = SparseLinear.from_linear(lin).eval()
    x = torch.randn(64, 256, device="cuda", dtype=torch.float16)
    y = layer(x)                      # this process's first GPU work: no cuBLAS call before
    a = torch.randn(64, 64, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        c = a @ a                     # the first cuBLAS call, under capture
    g.replay()
    torch.cuda.synchronize()
    print(json.dumps({"matmul": torch.equal(c, a @ a),
                      "layer": float((y.float() - lin(x).float()).abs().max())}))
"""


@pytest.mark.gpu
def test_a_cublas_call_captured_after_only_sparse_calls(run_aot_script):
    """A process whose only GPU work before a capture was a sparse layer's calls can capture
    a cuBLAS call (a sparse model's attention): the layer's first call created the thread's
    cuBLAS handle, which torch would otherwise create under capture, failing it."""
    r = run_aot_script(CUBLAS_AFTER_SPARSE, timeout=300)
    assert r["matmul"] and r["layer"] < 1e-2


@pytest.mark.skipif(os.environ.get("SPARSERT_TEST_DEVICE", "cpu") != "cpu",
                    reason="a stand-in GPU stream on CPU tensors")
def test_a_plan_remembers_the_kept_addresses_until_the_workspace_changes(recorded_launches):
    """A planned call's scratch and counter addresses are looked up once per stream and
    reused while this thread's workspace generation holds; a release, a grown buffer or
    another stream looks them up again, and a captured call makes its own every time (a
    stand-in GPU stream 0 on the CPU; launches recorded)."""
    from test_transpose_x import ROWS, _rows_major
    k = sparse_kernel(_fc).specialize(_weight(12, 40, 0.3, torch.float32, seed=8), ROWS)
    X, b = _rows_major(9, 40, torch.float32), torch.randn(12)
    for _ in range(2):
        k(X, b)
    plan = next(iter(k._calls.values()))
    plan.cuda = True
    numel, count, dtype = plan.scratch

    def kept():
        return (workspace.scratch(numel, dtype, CPU, 0)[1],
                workspace.counters(count, CPU, 0)[1])
    bufs, made = plan.workspace(0, False)
    assert made is not None and bufs[-2:] == kept()
    assert plan.workspace(0, False) == (bufs, None)                 # remembered
    other, made = plan.workspace(1, False)                          # another stream
    assert made is not None and other[-2] != bufs[-2]
    assert plan.workspace(0, False)[1] is not None                  # looked up again
    workspace.release()
    again, made = plan.workspace(0, False)
    assert made is not None and again[-2:] == kept()
    workspace.scratch(numel * 10, dtype, CPU, 0)                    # the buffer grows
    grown, made = plan.workspace(0, False)
    assert made is not None and grown[-2:] == kept()
    for _ in range(2):                                              # captured: its own
        captured, made = plan.workspace(0, True)
        assert made is not None and captured[-2] != grown[-2]
    assert plan.workspace(0, False) == (grown, None)
