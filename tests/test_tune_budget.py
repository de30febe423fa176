"""The tuner keeps to ``budget_s``: everything from the call on counts (weight conversion,
pruning, the reference, each candidate's build, check and timing), and a candidate runs
only if the time candidates have actually taken so far says it fits. A fake clock makes
every cost exact, so the tests count work, not wall time."""
import pytest
import torch

from dsl import Schedule
from sparsert_triton import as_sparse_weight, sparse_kernel
from sparsert_triton import tune as T

TABLES = [Schedule(mode="table", rows_per_program=1, chunk=c, block_n=16)
          for c in (2, 4, 8, 16)]


@sparse_kernel
def mm(W, X):
    return W @ X


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _weight(seed=0):
    g = torch.Generator().manual_seed(seed)
    return as_sparse_weight(torch.randn(12, 12, generator=g) * (torch.rand(12, 12, generator=g) < 0.3))


def _costs(monkeypatch, clock, build_s, time_s=0.5):
    """Each candidate's first call takes ``build_s`` and its timing ``time_s`` on the clock;
    no build counts as made earlier in this process (other tests' builds)."""
    monkeypatch.setattr(T, "_FIRST_CALL_S", {})
    monkeypatch.setattr(T, "_BUILT_TABLES", set())
    real = T.first_call

    def first_call(kernel, X, *operands):
        clock.now += build_s
        return real(kernel, X, *operands)
    monkeypatch.setattr(T, "first_call", first_call)
    calls = []

    def timer(fn):
        clock.now += time_s
        calls.append(fn)
        return 10.0 - len(calls)          # later candidates look faster: never a reason to stop
    return timer, calls


def test_time_before_the_first_candidate_counts(monkeypatch, device):
    # pruning and the reference take 9 s of a 10 s budget: only the first candidate fits
    clock = FakeClock()
    timer, calls = _costs(monkeypatch, clock, build_s=1.0)
    real_prune = T.prune

    def slow_prune(*args, **kw):
        clock.now += 9.0
        return real_prune(*args, **kw)
    monkeypatch.setattr(T, "prune", slow_prune)
    _, results = T.tune(mm, _weight(), torch.randn(12, 4, device=device), timer=timer,
                        candidates=TABLES, budget_s=10.0, use_cache=False, progress=False,
                        clock=clock)
    assert len(calls) == 1
    assert [r.status for r in results] == ["ok", "skipped", "skipped", "skipped"]
    assert all("budget" in r.detail for r in results[1:])


@pytest.mark.parametrize("build_s,budget_s,runs", [(6.0, 10.0, 1), (6.0, 20.0, 3),
                                                   (0.5, 100.0, 4), (2.0, 7.0, 2)])
def test_candidates_run_only_while_their_measured_cost_fits(monkeypatch, device, build_s,
                                                            budget_s, runs):
    # builds take far longer than the compile model's 1.5 s table estimate: what the first
    # candidate took predicts the others, so the search ends within the budget
    clock = FakeClock()
    timer, calls = _costs(monkeypatch, clock, build_s)
    _, results = T.tune(mm, _weight(1), torch.randn(12, 4, device=device), timer=timer,
                        candidates=TABLES, budget_s=budget_s, use_cache=False, progress=False,
                        clock=clock)
    assert len(calls) == runs
    assert clock.now <= budget_s
    assert [r.status for r in results].count("ok") == runs


def test_the_first_candidate_runs_even_over_the_budget(monkeypatch, device):
    clock = FakeClock()
    timer, calls = _costs(monkeypatch, clock, build_s=30.0)
    best, results = T.tune(mm, _weight(2), torch.randn(12, 4, device=device), timer=timer,
                           candidates=TABLES, budget_s=5.0, use_cache=False, progress=False,
                           clock=clock)
    assert len(calls) == 1 and best == results[0].schedule


def test_unrolled_candidates_far_over_the_compile_limit_are_pruned_without_counting(
        monkeypatch):
    # nnz + rows alone put the build over max_compile_s: no per-group count (np.unique over
    # the nonzeros, seconds on a 4.5M-nonzero layer) is needed to skip it
    counted = []
    monkeypatch.setattr(T, "statements_lower_bound",
                        lambda *a, **k: counted.append(a) or 10 ** 9)
    g = torch.Generator().manual_seed(3)
    w = as_sparse_weight(torch.randn(64, 64, generator=g) * (torch.rand(64, 64, generator=g) < 0.5))
    kept, skipped = T.prune([Schedule(mode="values", rows_per_program=R) for R in (2, 4, 8)],
                            w, 16, "float32", max_compile_s=1.0)
    assert not kept and len(skipped) == 3 and not counted
    assert all("max_compile_s" in r.detail for r in skipped)


def test_the_mask_is_hashed_once_per_weight_however_many_candidates(monkeypatch, device):
    """The build keys of every candidate (pruning and the budget loop ask for them) share one
    mask digest: hashing 20 M nonzeros costs ~0.2 s, and a tune of 11008 x 4096 at 50% spent
    12 of its 15 s of bookkeeping re-hashing the mask 55 times."""
    import sparsert_triton.weights as weights
    clock = FakeClock()
    timer, calls = _costs(monkeypatch, clock, build_s=0.0, time_s=0.0)
    hashed = []
    real = weights.csr_digest
    monkeypatch.setattr(weights, "csr_digest", lambda *a: hashed.append(1) or real(*a))
    w = _weight(3)
    X = torch.randn(12, 16, device=device)
    T.tune(mm, w, X, budget_s=100.0, progress=False, use_cache=False, timer=timer,
           clock=clock, candidates=TABLES + [Schedule(mode="blocks")])
    assert len(calls) == len(TABLES) + 1          # every candidate built and timed
    assert len(hashed) == 1
    # a weight with new values on the same mask reuses the digest
    w2 = w.with_values(torch.from_numpy(w.values).float() * 2)
    assert w2.mask_digest() == w.mask_digest() and len(hashed) == 1
    assert w2.values_digest() != w.values_digest()
