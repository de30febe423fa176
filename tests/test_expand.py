"""The expand mode (the bitmap layout written out as dense tiles once per call, then a tl.dot
product with the fused epilogue): results against float64 for each dtype, odd sizes, the
epilogue on strided operands, new values, an all-zero weight, its NaN rule, bad schedules,
where the default takes it, and that the expansion covers every tile whatever N."""
import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.weights import as_sparse_weight

from test_blocks import TOL, _fc, _gelu_res, _rel, _weight

pytestmark = pytest.mark.usefixtures("on_test_device")

EXPAND = Schedule(mode="expand", rows_per_program=16, chunk=32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", [(37, 300, 1), (9, 70, 33), (40, 64, 16), (70, 100, 20)])
def test_matches_float64(dtype, M, K, N):
    W = _weight(M, K, 0.4, dtype, seed=M + N, empty_rows=(1,))
    k = sparse_kernel(_fc).specialize(W, EXPAND)
    X = torch.randn(K, N).to(dtype)
    bias = torch.randn(M).to(dtype)
    Y = k(X, bias)
    assert k.last_plan.mode == "expand" and k.last_plan.use_dot
    assert _rel(Y, k.reference(X, bias)) < TOL[dtype]
    assert torch.equal(k(X, bias), Y)           # the scratch of a second call: same result


def test_default_tiles_and_float32_through_tf32():
    W = _weight(130, 200, 0.3, torch.float32, seed=2)
    X = torch.randn(200, 40)
    k = sparse_kernel(lambda W, X: W @ X).specialize(W, Schedule(mode="expand", allow_tf32=True))
    Y = k(X)
    p = k.last_plan
    assert (p.rows_per_program, p.chunk, p.block_n) == (64, 64, 64)
    assert _rel(Y, k.reference(X)) < 2e-3     # TF32 operands on a GPU


def test_bfloat16_epilogue_strided_x_and_out():
    W = _weight(24, 100, 0.2, torch.bfloat16, seed=3)
    k = sparse_kernel(_gelu_res).specialize(W, EXPAND)
    X = torch.randn(7, 100).to(torch.bfloat16).t()          # K x N, N not contiguous
    res = torch.randn(7, 24).to(torch.bfloat16).t()
    out = torch.empty(7, 24, dtype=torch.bfloat16).t()
    Y = k(X, 0.5, res, out=out)
    assert Y.data_ptr() == out.data_ptr()
    assert _rel(out, k.reference(X, 0.5, res)) < TOL[torch.bfloat16]


def test_new_values_and_an_all_zero_weight():
    W = _weight(33, 90, 0.3, torch.float16, seed=4)
    k = sparse_kernel(_fc).specialize(W, EXPAND)
    X = torch.randn(90, 18).half()
    bias = torch.randn(33).half()
    k(X, bias)
    k2 = k.with_values(torch.randn(k.weight.nnz).half())
    assert _rel(k2(X, bias), k2.reference(X, bias)) < TOL[torch.float16]
    zero = sparse_kernel(_fc).specialize(torch.zeros(20, 50, dtype=torch.float16), EXPAND)
    Xz, bz = torch.randn(50, 17).half(), torch.randn(20).half()
    assert torch.equal(zero(Xz, bz).cpu(), torch.relu(bz.float())[:, None].expand(20, 17)
                       .half().cpu())


def test_nan_in_x_reaches_its_whole_column():
    """Dense tiles (zeros included) multiply X: NaN in X[k, n] reaches every output of column
    n, as in a dense W @ X (the bitmap mode's tl.dot rule); other columns are unaffected."""
    W = torch.ones(16, 40, dtype=torch.float16)
    W[1:, 0] = 0
    X = torch.ones(40, 17, dtype=torch.float16)
    X[0, 0] = float("nan")
    Y = sparse_kernel(lambda W, X: W @ X).specialize(W, EXPAND)(X)
    assert torch.isnan(Y[:, 0]).all() and not torch.isnan(Y[:, 1:]).any()


@pytest.mark.parametrize("bad,msg", [(dict(rows_per_program=8), "16..128"),
                                     (dict(rows_per_program=24), "power of two"),
                                     (dict(chunk=48), "chunk"),
                                     (dict(use_dot=False), "use_dot"),
                                     (dict(split_k=2), "split_k"),
                                     (dict(streams=2), "streams"),
                                     (dict(block_n=8), "block_n"),
                                     (dict(row_order="nnz"), "given"),
                                     (dict(prefetch_tail=True), "prefetch_tail")])
def test_bad_expand_schedules_are_named(bad, msg):
    w = as_sparse_weight(_weight(8, 8, 0.5, torch.float16))
    with pytest.raises(ValueError, match=msg):
        plan_for(Schedule(mode="expand", **bad), w, 16, "float16")


@pytest.mark.parametrize("x_dtype", ["float32", "float64"])
def test_expand_needs_tensor_core_dtypes(x_dtype):
    w = as_sparse_weight(_weight(8, 8, 0.5, torch.float32))
    with pytest.raises(ValueError, match="tensor cores"):
        plan_for(Schedule(mode="expand"), w, 16, x_dtype)


def test_the_default_takes_expand_for_many_columns_on_half_weights():
    """bench/NOTES.md, seventeenth and nineteenth sessions: half precision, more than 64
    columns, at least 2**18 positions, density x N >= 12."""
    big = {d: as_sparse_weight(_weight(2048, 2048, d, torch.float16, seed=5)) for d in (0.1, 0.5)}
    encoder = as_sparse_weight(_weight(512, 512, 0.3, torch.float16, seed=3))
    small = as_sparse_weight(_weight(256, 512, 0.5, torch.float16))
    for dt in ("float16", "bfloat16"):
        assert plan_for(Schedule(), big[0.5], 128, dt, interpreter=False).mode == "expand"
        assert plan_for(Schedule(), big[0.1], 100, dt, interpreter=False).mode == "table"
        assert plan_for(Schedule(), big[0.1], 128, dt, interpreter=False).mode == "expand"
        assert plan_for(Schedule(), big[0.5], 64, dt, interpreter=False).mode == "bitmap"
        assert plan_for(Schedule(), encoder, 128, dt, interpreter=False).mode == "expand"
        assert plan_for(Schedule(), encoder, 65, dt, interpreter=False).mode == "expand"
        assert plan_for(Schedule(), small, 2048, dt, interpreter=False).mode != "expand"
    assert plan_for(Schedule(), big[0.5], 2048, "float32", interpreter=False).mode != "expand"


def _tiles(plan):
    return plan.rows_per_program, plan.block_n, plan.num_warps, plan.num_stages


def test_the_expand_tiles_follow_the_output_size():
    """128 x 256 / 8 warps from N = 1024 where it makes >= 96 programs, else 64 x 128 where
    that does (or below N = 1024 on weights of >= 2**22 positions), else 64 x 64."""
    w = {shape: as_sparse_weight(_weight(*shape, 0.5, torch.float16, seed=5))
         for shape in ((2048, 2048), (768, 768), (512, 512), (3072, 768))}
    def tiles(shape, N):
        return _tiles(plan_for(Schedule(), w[shape], N, "float16", interpreter=False))
    assert tiles((2048, 2048), 300) == (64, 128, 4, 3)
    assert tiles((2048, 2048), 128) == (64, 128, 4, 4)
    assert tiles((2048, 2048), 2048) == (128, 256, 8, 4)    # 16 x 8 programs
    assert tiles((3072, 768), 1024) == (128, 256, 8, 4)     # 24 x 4
    assert tiles((768, 768), 1024) == (64, 128, 4, 4)       # 6 x 4 wide, 12 x 8
    assert tiles((512, 512), 1024) == (64, 64, 4, 4)        # 4 x 4 wide, 8 x 8
    assert tiles((3072, 768), 128) == (64, 64, 4, 4)        # 48 at 64 x 128
    assert tiles((768, 768), 100) == (64, 64, 4, 4)
    # a field the user set is kept; the others still follow the rule
    p = plan_for(Schedule(mode="expand", block_n=128), w[(768, 768)], 128, "float16",
                 interpreter=False)
    assert (p.rows_per_program, p.block_n) == (64, 128)


def test_expansion_programs_walk_every_tile_whatever_n(monkeypatch, tmp_path):
    """The expanding tickets are (row blocks x shares of K tiles), independent of N: with 2
    shares per block each expanding program writes every second tile of its block."""
    from sparsert_triton.compiler import bitmap
    from sparsert_triton.compiler.render import expand
    from sparsert_triton.runtime import launch
    assert bitmap.expansion_programs(64, 64) == 9 and bitmap.expansion_programs(1, 5) == 5
    assert bitmap.expansion_programs(1000, 64) == 1
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))    # the patched source stays here
    monkeypatch.setattr(expand, "expansion_programs", lambda blocks, tiles: 2)
    monkeypatch.setattr(launch, "expansion_programs", lambda blocks, tiles: 2)
    W = _weight(40, 230, 0.3, torch.float16, seed=7)        # 3 blocks x 8 tiles of 32
    for N in (1, 40):
        k = sparse_kernel(_fc).specialize(W, EXPAND)
        X, bias = torch.randn(230, N).half(), torch.randn(40).half()
        assert "range(share, 8, 2)" in k.source and "ticket // 2, ticket % 2" in k.source
        assert _rel(k(X, bias), k.reference(X, bias)) < TOL[torch.float16]


def test_counters_kept_between_calls_are_left_zero(monkeypatch):
    """The kernel's programs take tickets from its counters and the last to finish sets them
    back to zero: calls sharing one counter buffer (as a GPU stream's kept one is shared)
    each get their own product, and the entries past the kernel's are not touched."""
    from sparsert_triton.runtime import launch
    shared = torch.zeros(64, dtype=torch.int32)
    shared[-1] = 5
    # (the checked and the planned calls both take them through launch.workspace_buffers)
    monkeypatch.setattr(launch, "counters",
                        lambda n, dev, stream, captured=None: (shared, shared.data_ptr()))
    W = _weight(70, 100, 0.3, torch.float16, seed=8)          # 5 blocks of 16 rows
    k = sparse_kernel(_fc).specialize(W, EXPAND)
    bias = torch.randn(70).half()
    for N in (40, 7, 40, 40):
        X = torch.randn(100, N).half()
        assert _rel(k(X, bias), k.reference(X, bias)) < TOL[torch.float16]
        assert not shared[:-1].any() and shared[-1] == 5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_captured_call_runs_two_kernels_with_the_same_sums(monkeypatch, dtype):
    """Under CUDA-graph capture the call runs the expansion and the product as two kernels
    (no counters: the scratch stands in for them); the same tiles in the same K order give
    the one launch's result bit for bit."""
    from sparsert_triton.runtime import launch
    W = _weight(70, 200, 0.3, dtype, seed=9)
    sched = EXPAND.replace(allow_tf32=True) if dtype == torch.float32 else EXPAND
    k = sparse_kernel(_fc).specialize(W, sched)
    X, bias = torch.randn(200, 45).to(dtype), torch.randn(70).to(dtype)
    one = k(X, bias)
    ran = []
    real = launch.grids
    monkeypatch.setattr(launch, "captured_call", lambda v, X: v.captured is not None)
    monkeypatch.setattr(launch, "grids", lambda v, N, c=False: ran.append(c) or real(v, N, c))
    two = k(X, bias)
    assert ran == [True] and torch.equal(one, two)
    nt = -(-45 // k.last_plan.block_n)        # 5 row blocks, 7 K tiles (each one share)
    assert [g for _, g in real(k._last, 45, True)] == [(5, 7, 1), (5, nt, 1)]
    assert [g for _, g in real(k._last, 45)] == [(5 * (7 + nt), 1, 1)]
    assert _rel(two, k.reference(X, bias)) < (2e-3 if dtype == torch.float32 else TOL[dtype])


def test_the_first_eager_call_runs_the_captured_kernels_too(monkeypatch):
    """With compiled launches (a GPU's), the first call made outside a capture runs the two
    kernels of a captured call before its own one (so they are compiled and loaded before
    any capture), the scratch in the counters' place; later calls launch only their own."""
    from sparsert_triton import api
    from sparsert_triton.runtime.direct import Launcher
    seen = []
    real = Launcher.__call__

    def spy(self, fn, grid, args, opts, device, spec=None):
        seen.append((fn.fn.__name__, grid, args[7] is args[6]))
        return real(self, fn, grid, args, opts, device, spec)
    monkeypatch.setattr(Launcher, "__call__", spy)
    monkeypatch.setattr(api, "interpreting", lambda: False)     # the launcher stays on
    k = sparse_kernel(_fc).specialize(_weight(70, 200, 0.3, torch.float16, seed=10), EXPAND)
    X, bias = torch.randn(200, 45).half(), torch.randn(70).half()
    Y = k(X, bias)
    nt = -(-45 // k.last_plan.block_n)
    assert seen == [("sparse_expand_tiles_kernel", (5, 7, 1), True),
                    ("sparse_dense_kernel", (5, nt, 1), True),
                    ("sparse_expand_kernel", (5 * (7 + nt), 1, 1), False)]
    assert _rel(Y, k.reference(X, bias)) < TOL[torch.float16]
    seen.clear()
    assert torch.equal(k(X, bias), Y) and [s[0] for s in seen] == ["sparse_expand_kernel"]


def test_the_tuner_times_expand_from_128_half_precision_columns():
    from sparsert_triton.tune import candidate_schedules
    w = as_sparse_weight(_weight(256, 512, 0.3, torch.float16))
    for N, dt, want in ((128, "float16", 2), (2048, "bfloat16", 3), (64, "float16", 0),
                        (512, "float32", 0)):
        got = [s for s in candidate_schedules(w, N, dt) if s.mode == "expand"]
        assert len(got) == want, (N, dt)
        for s in got:                     # every candidate is a valid plan
            assert plan_for(s, w, N, dt).mode == "expand"


@pytest.mark.parametrize("given", [dict(row_order="cluster"), dict(streams=2), dict(chunk=8),
                                   dict(block_n=8), dict(prefetch_tail=True),
                                   dict(use_dot=False), dict(split_k=2), dict(num_warps=2),
                                   dict(prefetch_tail=True, prefetch_x=True)])
def test_the_default_keeps_the_fields_a_user_set(given):
    """An 'auto' mode with some fields set: the row-block mode the default would pick only
    where those fields fit it, else the table kernel; never an error the user did not ask
    for, and every field given is kept."""
    w = as_sparse_weight(_weight(2048, 2048, 0.5, torch.float16, seed=5))
    for N in (4, 16, 256):
        p = plan_for(Schedule(**given), w, N, "float16", interpreter=False)
        for name, v in given.items():
            if name != "use_dot" or p.mode != "table":
                assert getattr(p, name) == v, (N, name, p.mode)
        if p.mode == "table":
            with pytest.raises(ValueError):        # the mode it would have taken refuses
                plan_for(Schedule(mode=plan_for(Schedule(), w, N, "float16",
                                                interpreter=False).mode, **given),
                         w, N, "float16", interpreter=False)
