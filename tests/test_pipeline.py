"""pipeline.py: the stages of one variant in order; a cache hit skips them; SPARSERT_DUMP
writes every stage's output."""
import pytest
import torch

from dsl import Schedule, relu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler import pipeline


def _bias_relu(W, X, b):
    return relu(W @ X + b)


def _weight(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 40, generator=g) * (torch.rand(24, 40, generator=g) < 0.3)


@pytest.mark.parametrize("mode", ["values", "table", "blocks"])
def test_build_runs_each_stage_once_and_dumps_it(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_DUMP", str(tmp_path))
    calls = []
    for stage in ("specialise", "lower", "render"):
        real = getattr(pipeline, stage)
        monkeypatch.setattr(pipeline, stage,
                            lambda *a, _real=real, _name=stage, **k: calls.append(_name)
                            or _real(*a, **k))
    # a weight no other test uses: the first build misses the kernel cache
    W = _weight(1000 + ["values", "table", "blocks"].index(mode))
    X, b = torch.randn(40, 8), torch.randn(24)
    k = sparse_kernel(_bias_relu, schedule=Schedule(mode=mode)).specialize(W)
    torch.testing.assert_close(k(X, b), torch.relu(W @ X + b[:, None]), rtol=1e-5, atol=1e-5)
    assert calls == ["specialise", "lower", "render"]
    dumps = list(tmp_path.iterdir())
    assert len(dumps) == 1
    assert sorted(p.name for p in dumps[0].iterdir()) == [
        "1_trace.txt", "2_canonical.txt", "3_specialised.txt", "4_lowered.txt", "5_kernel.py"]
    assert (dumps[0] / "5_kernel.py").read_text() == k.source
    # the same weight again, in a new kernel: the stored entry, no stage runs
    k2 = sparse_kernel(_bias_relu, schedule=Schedule(mode=mode)).specialize(W)
    torch.testing.assert_close(k2(X, b), k(X, b))
    assert calls == ["specialise", "lower", "render"]


def test_resolve_refuses_a_padded_convolution_without_its_input_size():
    from dsl import conv2d
    from sparsert_triton.compiler.plan import Signature
    W4 = torch.randn(4, 3, 3, 3)
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode="table", conv_input="padded")).specialize(W4)
    sig = Signature("float32", "float32", "float32", ())
    with pytest.raises(ValueError, match="spatial"):
        pipeline.resolve(k.schedule, k.weight, k.conv, sig, 16, "interpreter")
    t = pipeline.resolve(k.schedule, k.weight, k.conv, sig, 16, "interpreter", spatial=(4, 4))
    assert t.plan.pad_input and t.spatial == (4, 4) and t.offsets is not None


def _overlap_greedy_first_group(A, rows, R):
    """The first group the greedy makes from ``rows`` (longest seed, then the most shared
    columns; ties: the longer row, then the earlier row): recomputed by brute force."""
    import numpy as np
    lengths = A[rows].sum(axis=1)
    seed = rows[int(np.argmax(lengths))]          # longest first (stable: earliest)
    group, union = [seed], A[seed].astype(bool)
    while len(group) < R:
        free = [r for r in sorted(rows) if r not in group]
        score = [(A[r].astype(bool) & union).sum() + A[r].sum() * 1e-6 for r in free]
        r = free[int(np.argmax(score))]
        group.append(r)
        union |= A[r].astype(bool)
    return group


def test_cluster_of_a_large_weight_groups_within_windows(monkeypatch):
    """Above CLUSTER_EXACT_WORK the greedy runs within consecutive windows of the length
    order (the exact one costs ~M x nnz: minutes for an LLM layer): every row once, each
    window's rows grouped among themselves, each group as the greedy makes it there."""
    import numpy as np
    import torch
    from dsl import Schedule
    from sparsert_triton.weights import as_sparse_weight
    from sparsert_triton.compiler import specialise as S
    from sparsert_triton.compiler.canonicalise import plan_for
    g = torch.Generator().manual_seed(5)
    W = torch.randn(40, 24, generator=g) * (torch.rand(40, 24, generator=g) < 0.4)
    w = as_sparse_weight(W)
    plan = plan_for(Schedule(mode="values", rows_per_program=4, row_order="cluster"), w, 16,
                    "float32")
    exact = S.row_order(w, plan)
    monkeypatch.setattr(S, "CLUSTER_EXACT_WORK", 0)
    monkeypatch.setattr(S, "CLUSTER_WINDOW", 8)
    windowed = S.row_order(w, plan)
    assert sorted(windowed.tolist()) == list(range(40))
    by_length = np.argsort(-w.row_nnz, kind="stable")
    A = (W != 0).numpy().astype(np.int64)
    for i in range(0, 40, 8):
        window = by_length[i:i + 8]
        assert set(windowed[i:i + 8].tolist()) == set(window.tolist())
        assert windowed[i:i + 4].tolist() == _overlap_greedy_first_group(A, window, 4)
    assert exact.tolist() != windowed.tolist()      # the windows did constrain the greedy
    monkeypatch.setattr(S, "CLUSTER_EXACT_WORK", 4e9)
    assert S.row_order(w, plan).tolist() == exact.tolist()
