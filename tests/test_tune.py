"""The autotuner's logic on the CPU: cost model, candidates, pruning, search and persistence.

Kernels run under the Triton interpreter; a fake timer stands in for the GPU timing.
"""
import json
import os

import numpy as np
import pytest
import torch

from dsl import Schedule
from sparsert_triton import as_sparse_weight, sparse_kernel
from sparsert_triton import tune as T
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.compiler.specialise import specialise


ON_CPU = os.environ.get("SPARSERT_TEST_DEVICE", "cpu") == "cpu"
cpu_only = pytest.mark.skipif(not ON_CPU, reason="checks the CPU/interpreter behaviour")


def _weight(M, K, density, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    return as_sparse_weight(W.to(dtype))


def _big_weight(M=2048, K=2048, nnz=200_000):
    """A large sparse weight built directly in CSR (no dense M x K tensor)."""
    from sparsert_triton.weights import from_csr_arrays
    rng = np.random.default_rng(0)
    flat = np.sort(rng.choice(M * K, nnz, replace=False))
    indptr = np.zeros(M + 1, np.int64)
    np.cumsum(np.bincount(flat // K, minlength=M), out=indptr[1:])
    return from_csr_arrays(M, K, indptr, flat % K, rng.standard_normal(nnz).astype(np.float32))


@sparse_kernel
def mm(W, X):
    return W @ X


@pytest.mark.parametrize("R,order", [(1, "given"), (4, "given"), (5, "nnz"), (16, "cluster")])
def test_statement_count_is_the_layouts_and_the_bound_is_below_it(R, order):
    w = _weight(40, 30, 0.2, seed=R)
    plan = plan_for(Schedule(mode="values", rows_per_program=R, row_order=order,
                             max_statements_per_function=40), w, 64, "float32")
    layout = specialise(w, plan)
    exact = sum(p.statements for g in layout.groups for p in g.parts)
    assert T.unrolled_statements(w, plan) == exact
    assert w.nnz + w.M <= T.statements_lower_bound(w, R, "nnz" if order == "cluster" else order) <= exact \
        or order == "cluster"
    assert T.estimate_compile_s(w, plan, workers=1) == pytest.approx(
        T.COMPILE_S_FIXED + T.COMPILE_S_PER_STATEMENT * exact)


def test_compile_estimate_with_workers_is_the_longest_kernel_or_an_even_share():
    w = _weight(64, 48, 0.3, seed=3)
    plan = plan_for(Schedule(mode="values", rows_per_program=4, max_statements_per_function=12),
                    w, 64, "float32")
    layout = specialise(w, plan)
    per_kernel = [sum(p.statements for g in layout.groups[a:b] for p in g.parts)
                  for a, b in layout.kernels]
    assert len(per_kernel) > 3
    seconds = lambda s: T.COMPILE_S_FIXED + T.COMPILE_S_PER_STATEMENT * s
    assert T.estimate_compile_s(w, plan, workers=1) == pytest.approx(seconds(sum(per_kernel)))
    for n in (2, 64):
        assert T.estimate_compile_s(w, plan, workers=n) == pytest.approx(
            seconds(max(max(per_kernel), sum(per_kernel) / n)))
    assert T.estimate_compile_s(w, plan, workers=64) < T.estimate_compile_s(w, plan, workers=2) \
        < T.estimate_compile_s(w, plan, workers=1)
    from dataclasses import replace
    one = replace(plan_for(Schedule(mode="values", rows_per_program=4), w, 64, "float32"),
                  max_functions_per_kernel=1000)     # one kernel: nothing to share
    assert T.estimate_compile_s(w, one, workers=8) == T.estimate_compile_s(w, one, workers=1)


def test_compile_estimate_grows_with_nnz_and_table_is_flat():
    small, large = _weight(64, 64, 0.05), _weight(64, 64, 0.5)
    p = lambda w, mode: plan_for(Schedule(mode=mode, rows_per_program=8), w, 128, "float32")
    var = lambda w: T.estimate_compile_s(w, p(w, "values")) - T.COMPILE_S_FIXED
    assert var(large) > 5 * var(small) > 0
    assert T.estimate_compile_s(large, p(large, "table")) == T.estimate_compile_s(small, p(small, "table"))


@pytest.mark.parametrize("N,dtype", [(1, "float32"), (49, "float16"), (3136, "float32"),
                                     (2048, "bfloat16")])
def test_candidates_are_valid_plans_and_dot_only_for_half(N, dtype):
    w = _weight(64, 96, 0.1)
    cands = T.candidate_schedules(w, N, dtype)
    assert cands[0] == T.heuristic(w, N, dtype)
    kept, skipped = T.prune(cands, w, N, dtype, max_compile_s=1e9)
    assert kept and all(r.plan is not None for r in kept)
    assert all(r.detail == "duplicate plan" for r in skipped)       # nothing invalid
    plans = [r.plan for r in kept]
    assert len(set(plans)) == len(plans)
    assert {p.mode for p in plans} == {"values", "indices", "table"} | (
        {"blocks"} if N <= 64 else set()) | (                   # blocks: few columns only
        {"bitmap"} if dtype != "float32" and N <= 256 else set()) | (
        {"expand"} if dtype != "float32" and N >= 128 else set())
    dots = [p for p in plans if p.use_dot]
    assert bool(dots) == (dtype != "float32")
    assert all(p.block_n <= max(16, T.next_pow2(N)) for p in plans)
    assert any(p.split_k > 1 for p in plans) == (N <= 256)     # split rows for small N only


def test_prune_drops_unrolled_builds_over_the_compile_limit():
    w = _big_weight()
    kept, skipped = T.prune(T.candidate_schedules(w, 2048, "float32"), w, 2048, "float32",
                            max_compile_s=30)
    assert kept and {r.plan.mode for r in kept} == {"table"}
    reasons = [r.detail for r in skipped if r.plan is not None and r.plan.mode != "table"
               and r.detail != "duplicate plan"]
    assert reasons and all("estimated compile" in d for d in reasons)
    assert T.heuristic(w, 2048).mode == "table"          # the default is compile-aware too


def test_prune_reports_invalid_schedules():
    w = _weight(16, 16, 0.3)
    bad = Schedule(mode="table", rows_per_program=3)          # table needs a power of two
    kept, skipped = T.prune([bad, Schedule(mode="table", rows_per_program=4)], w, 8, "float32")
    assert len(kept) == 1 and skipped[0].detail.startswith("invalid")


def test_heuristic_small_matrix_unrolls_and_needs_no_gpu():
    w = _weight(32, 32, 0.1)
    s = T.heuristic(w, 64, "float32")
    assert s.mode == "values" and s.block_n == 32 and s.num_warps == 1   # one warp, 32 columns
    assert T.heuristic(w, 64, "float32", max_compile_s=0.0).mode == "table"


def _fake_timer(times):
    it = iter(times)
    calls = []

    def timer(fn):
        fn()                     # the timed callable must run
        calls.append(1)
        return next(it)
    timer.calls = calls
    return timer


CANDS = [Schedule(mode="table", rows_per_program=2, chunk=4),
         Schedule(mode="values", rows_per_program=4),
         Schedule(mode="indices", rows_per_program=2)]


def test_tune_picks_the_fastest_and_persists_it(tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    w = _weight(20, 24, 0.25)
    X = torch.randn(24, 9, device=device)
    timer = _fake_timer([5.0, 2.0, 9.0])
    best, results = T.tune(mm, w, X, timer=timer, candidates=CANDS, progress=False)
    assert best.mode == "values" and best.rows_per_program == 4
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert [r.median_us for r in results] == [5.0, 2.0, 9.0]
    files = list((tmp_path / "tuned").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["key"]["n_bucket"] == 16 and rec["key"]["mask"] == w.mask_digest()
    assert rec["plan"]["mode"] == "values" and rec["median_us"] == 2.0

    # same mask, other values, N in the same bucket: returned without timing
    def no_timer(fn):
        raise AssertionError("a cached plan must not be timed again")
    w2 = w.with_values(torch.randn(w.nnz))
    again, res2 = T.tune(mm, w2, torch.randn(24, 16, device=device), timer=no_timer, candidates=CANDS)
    assert again == best and res2[0].status == "cached"
    # a plain call (no timer) also reads the store
    assert T.tune(mm, w, X)[0] == best

    # another N bucket is tuned afresh
    timer3 = _fake_timer([1.0, 3.0, 4.0])
    other, _ = T.tune(mm, w, torch.randn(24, 40, device=device), timer=timer3, candidates=CANDS,
                      progress=False)
    assert other.mode == "table" and len(timer3.calls) == 3


def test_plan_key_depends_on_versions_dtype_and_bucket(monkeypatch, device):
    w = _weight(8, 8, 0.5)
    from sparsert_triton.runtime.arguments import signature_for
    sig = signature_for(mm.program, w, torch.randn(8, 5, device=device), ())
    k1, _ = T.plan_key(mm.program, w, 5, sig, "gpu")
    assert T.plan_key(mm.program, w, 7, sig, "gpu")[0] == k1          # same bucket (8)
    assert T.plan_key(mm.program, w, 9, sig, "gpu")[0] != k1
    assert T.plan_key(mm.program, w, 5, sig, "other gpu")[0] != k1
    sig16 = signature_for(mm.program, w, torch.randn(8, 5, dtype=torch.float16, device=device), ())
    assert T.plan_key(mm.program, w, 5, sig16, "gpu")[0] != k1
    monkeypatch.setattr(T.cache, "versions", lambda: {"triton": "0", "torch": "0", "sparsert": "0"})
    assert T.plan_key(mm.program, w, 5, sig, "gpu")[0] != k1


def test_tune_rejects_wrong_results(tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    w = _weight(12, 12, 0.3)
    X = torch.randn(12, 4, device=device)
    ref, mag = T.reference_and_magnitude(w, X)
    with pytest.raises(RuntimeError, match="no candidate schedule ran correctly"):
        T.tune(mm, w, X, timer=_fake_timer([1.0] * 3), candidates=CANDS[:2],
               reference=(ref + 1.0, mag), progress=False)
    assert not list((tmp_path / "tuned").glob("*.json"))


def test_budget_stops_after_the_first_candidate(tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    w = _weight(12, 12, 0.3)
    timer = _fake_timer([3.0, 1.0, 1.0])
    best, results = T.tune(mm, w, torch.randn(12, 4, device=device), timer=timer, candidates=CANDS,
                           budget_s=0.0, use_cache=False, progress=False)
    assert [r.status for r in results] == ["ok", "skipped", "skipped"]
    assert all("budget" in r.detail for r in results[1:])
    assert best == results[0].schedule and len(timer.calls) == 1


@cpu_only
def test_tune_without_gpu_raises_or_returns_the_heuristic(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    w = _weight(16, 16, 0.2)
    X = torch.randn(16, 8)
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        T.tune(mm, w, X)
    s, results = T.tune(mm, w, X, allow_cpu=True)
    assert s == T.heuristic(w, 8, "float32") and results == []


def test_check_result_scales_with_dtype():
    w = _weight(16, 16, 0.5)
    X = torch.randn(16, 8)
    ref, mag = T.reference_and_magnitude(w, X)
    noisy = ref * (1 + 1e-3)
    assert not T.check_result(noisy, ref, mag, "float32")[0]
    assert T.check_result(noisy, ref, mag, "float16")[0]
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert not T.check_result(nan, ref, mag, "bfloat16")[0]


@pytest.mark.gpu
def test_gpu_tune_times_candidates_and_reuses_the_plan(tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    w = _weight(256, 256, 0.1)
    X = torch.randn(256, 512, device=device)
    best, results = T.tune(mm, w, X, budget_s=10, max_compile_s=10, progress=False)
    ok = [r for r in results if r.status == "ok"]
    assert ok and all(r.median_us > 0 and r.compile_s > 0 for r in ok)
    assert best == min(ok, key=lambda r: r.median_us).schedule
    assert not [r for r in results if r.status in ("wrong", "error")], \
        [(r.schedule, r.detail) for r in results if r.status in ("wrong", "error")]
    again, res = T.tune(mm, w, X)
    assert again == best and res[0].status == "cached"
    Y = mm.specialize(w, schedule=best)(X)
    ref, mag = T.reference_and_magnitude(w, X)
    assert T.check_result(Y, ref, mag)[0]


def test_tune_convolution_with_a_fake_timer(device):
    """Convolutions are tuned through their specialised kernel; the fastest correct wins."""
    from dsl import conv2d
    from sparsert_triton.tune import tune
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 4, 3, 3, generator=g) * (torch.rand(6, 4, 3, 3, generator=g) < 0.4)
    k = sparse_kernel(lambda W, X: conv2d(W, X, stride=2, padding=1)).specialize(W)
    X = torch.randn(2, 4, 7, 6, generator=g).to(device)
    slow = Schedule(mode="table", rows_per_program=1, chunk=4, block_n=16)
    fast = Schedule(mode="values", rows_per_program=4, block_n=16)
    times = iter([9.0, 1.0])
    best, results = tune(k, None, X, timer=lambda fn: next(times), candidates=[slow, fast],
                         use_cache=False, progress=False)
    assert (best.mode, best.rows_per_program) == ("values", 4)
    assert [r.status for r in results] == ["ok", "ok"]
    with pytest.raises(TypeError, match="specialised kernel"):
        tune(sparse_kernel(lambda W, X: conv2d(W, X)), W, X, timer=lambda fn: 1.0)
    with pytest.raises(TypeError, match="4-D"):
        tune(k, None, X[0], timer=lambda fn: 1.0)


def test_convolutions_search_their_own_candidates():
    """A convolution's search space: the conv heuristic first (the padded input, 64-column
    tiles, chunks of 8, the prefetched tail), the measured winners after (unrolled, split
    rows); tiles capped by N without idling threads."""
    g = torch.Generator().manual_seed(4)
    w = (torch.randn(64, 576, generator=g) * (torch.rand(64, 576, generator=g) < 0.1))
    big = T.candidate_schedules(w, 3136, "float32", conv=True)
    assert big[0] == T.heuristic(w, 3136, "float32", conv=True)
    assert (big[0].mode, big[0].block_n, big[0].chunk, big[0].conv_input,
            big[0].prefetch_tail) == ("table", 64, 8, "padded", True)
    assert {s.mode for s in big} == {"table", "values"}
    assert any(s.split_k == 4 and s.num_warps == 4 for s in big)
    assert len(big) == len(set(big)) and max(s.block_n for s in big) == 512
    # the widest unrolled form: sixteen warps, one column per lane
    assert any(s.mode == "values" and (s.block_n, s.num_warps) == (512, 16) for s in big)
    small = T.candidate_schedules(w, 49, "float32", conv=True)
    assert max(s.block_n for s in small) == 64
    # one element per thread; a split row gives each of its warps the whole tile
    assert all(s.num_warps * 32 <= s.block_n if s.split_k == 1 else
               s.num_warps == s.split_k and s.block_n >= 32 for s in small)
    assert T.candidate_schedules(w, 3136, "float32") != big          # W @ X: its own space


def test_the_conv_heuristic_resolves_as_the_kernel_does(tmp_path, monkeypatch, device):
    """The tuner's default (its first candidate, and its answer without a GPU) is the kernel's
    own default for that input: where tap masks serve it, the tap-mask kernel, with the
    padded form still among the candidates; for a grid of few programs, the padded copy with
    prefetch_x."""
    from dsl import conv2d
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(8)
    w = (torch.randn(64, 576, generator=g) * (torch.rand(64, 576, generator=g) < 0.1))
    masks = T.candidate_schedules(w, 3136, "float32", conv=True, tap_masks_fit=True)
    assert masks[0].conv_input == "masked"
    assert any(s.conv_input == "padded" and s.mode == "table" for s in masks)
    kept, skipped = T.prune(masks, w, 3136, "float32", conv=True, tap_masks_fit=True)
    assert kept[0].plan.tap_masks and any(r.detail == "duplicate plan" for r in skipped)
    # enough nonzeros (> 2048) for the table kernel by default
    W = torch.randn(40, 16, 3, 3, generator=g) * (torch.rand(40, 16, 3, 3, generator=g) < 0.5)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(W)
    X = torch.randn(1, 16, 6, 5, generator=g).to(device)
    k(X)
    s = T.heuristic(k.weight, 30, "float32", conv=True, tap_masks_fit=True)
    if ON_CPU:   # tune's answer without a GPU (on one it times the candidates)
        assert T.tune(k, None, X, allow_cpu=True, use_cache=False)[0] == s
    # 40 rows x 1 column tile: few programs
    assert s.prefetch_x is True and s.conv_input == "padded"
    assert k.last_plan.prefetch_x and k.last_plan.pad_input and not k.last_plan.tap_masks
    assert T.heuristic(w, 3136, "float32", conv=True).conv_input == "padded"   # size unknown


def test_tune_convolution_searches_the_conv_space_by_default(tmp_path, monkeypatch, device):
    """Without ``candidates`` a convolution is tuned over ``conv_candidate_schedules``; every
    candidate runs correctly (interpreter) and the fastest is returned."""
    from dsl import conv2d
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(5)
    W = torch.randn(5, 3, 3, 3, generator=g) * (torch.rand(5, 3, 3, 3, generator=g) < 0.3)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(W)
    X = torch.randn(1, 3, 5, 4, generator=g).to(device)
    space = T.candidate_schedules(k.weight, 20, "float32", conv=True)
    times = iter(range(100, 0, -1))           # later candidates "faster"
    best, results = T.tune(k, None, X, timer=lambda fn: float(next(times)), progress=False,
                           use_cache=False)
    ran = [r for r in results if r.status == "ok"]
    assert len(ran) >= 3 and all(r.status in ("ok", "skipped") for r in results)
    assert best == ran[-1].schedule
    assert {r.plan.pad_input for r in ran} == {True, False}
    assert any(r.plan.split_k > 1 for r in ran) and any(r.plan.mode == "values" for r in ran)
    assert len(results) == len(space)


@pytest.mark.gpu
def test_gpu_tune_convolution_over_its_candidates(tmp_path, monkeypatch, device):
    """The conv search space timed for real: every candidate runs correctly, the fastest wins
    and its kernel matches F.conv2d."""
    from dsl import conv2d
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(6)
    W = torch.randn(64, 32, 3, 3, generator=g) * (torch.rand(64, 32, 3, 3, generator=g) < 0.1)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(W)
    X = torch.randn(2, 32, 14, 14, generator=g).to(device)
    best, results = T.tune(k, None, X, budget_s=60, max_compile_s=10, progress=False)
    ok = [r for r in results if r.status == "ok"]
    assert len(ok) >= 4 and best == min(ok, key=lambda r: r.median_us).schedule
    assert not [r for r in results if r.status in ("wrong", "error")]
    Y = sparse_kernel(lambda W, X: conv2d(W, X, padding=1)).specialize(W, schedule=best)(X)
    ref = torch.nn.functional.conv2d(X.double(), W.double().to(device), None, 1, 1)
    torch.testing.assert_close(Y.double(), ref, rtol=1e-4, atol=1e-4)


def test_half_convolutions_also_try_tensor_cores():
    g = torch.Generator().manual_seed(7)
    w = (torch.randn(64, 576, generator=g) * (torch.rand(64, 576, generator=g) < 0.1))
    half = T.candidate_schedules(w, 784, "float16", conv=True)
    assert any(s.use_dot is True for s in half)
    assert not any(s.use_dot is True for s in T.candidate_schedules(w, 784, "float32", conv=True))
    kept, skipped = T.prune(half, w, 784, "float16", conv=True)
    assert any(r.plan.use_dot for r in kept) and not [r for r in skipped if "invalid" in r.detail]
