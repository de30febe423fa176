"""The benchmark suite on the CPU: baselines, the DLMC walker, the runner's CSV, the report.

GPU timing is replaced by a fake; kernels run under the Triton interpreter.
"""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from bench import baselines, dlmc_bench, report, timing
from sparsert_triton import as_sparse_weight
from sparsert_triton.dlmc import write_smtx
from sparsert_triton.tune import check_result, reference_and_magnitude


ON_CPU = os.environ.get("SPARSERT_TEST_DEVICE", "cpu") == "cpu"
cpu_only = pytest.mark.skipif(not ON_CPU, reason="checks the CPU/interpreter behaviour")


def _weight(M, K, density, dtype=torch.float32, seed=0, empty_rows=()):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    for r in empty_rows:
        W[r] = 0
    return as_sparse_weight(W.to(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("N", [1, 37])
def test_triton_csr_matches_float64_reference(dtype, N, device):
    w = _weight(21, 70, 0.3, baselines.DTYPES[dtype], empty_rows=(0, 5))
    X = torch.randn(70, N).to(baselines.DTYPES[dtype]).to(device)
    ref, mag = reference_and_magnitude(w, X)
    Y = baselines.triton_csr(w, X, dtype)()
    assert Y.dtype == X.dtype and Y.shape == (21, N)
    ok, ratio = check_result(Y, ref, mag, dtype)
    assert ok, ratio
    assert torch.all(Y[0] == 0) and torch.all(Y[5] == 0)


def test_triton_csr_reads_strided_x_and_long_rows(device):
    w = _weight(6, 300, 0.9)                      # rows longer than the unroll: several loop steps
    X = torch.randn(40, 300).to(device).t()       # (300, 40), transposed strides
    ref, mag = reference_and_magnitude(w, X)
    assert check_result(baselines.triton_csr(w, X, "float32")(), ref, mag)[0]


def test_torch_baselines_match_and_tf32_flag_is_restored(device):
    w = _weight(16, 24, 0.3)
    X = torch.randn(24, 8).to(device)
    ref, mag = reference_and_magnitude(w, X)
    before = torch.backends.cuda.matmul.allow_tf32
    for name in ("dense", "dense_tf32", "cusparse"):
        assert check_result(baselines.SYSTEMS[name](w, X, "float32")(), ref, mag)[0], name
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with baselines.tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert not baselines.applies("dense_tf32", "float16") and baselines.applies("dense", "float16")
    with pytest.raises(ValueError, match="float32"):
        baselines.dense_tf32(w, X.half(), "float16")
    with pytest.raises(ValueError, match=r"\(24, N\)"):
        baselines.dense(w, torch.randn(5, 3), "float32")


@cpu_only
def test_timing_refuses_to_run_without_a_gpu():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET|CUDA"):
        timing.time_system(lambda x: (lambda: x), torch.zeros(2, 2), 16)
    assert timing.buffer_count(100 * 10**6) == 1
    assert timing.buffer_count(30 * 10**6) == 5
    assert timing.buffer_count(1000) == timing.MAX_BUFFERS


# ------------------------------------------------------------------ the DLMC walker and runner

def _smtx(root, model, sparsity, name, M, K, density, rng):
    d = root / model / "magnitude_pruning" / sparsity
    d.mkdir(parents=True, exist_ok=True)
    mask = rng.random((M, K)) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))])
    ext = ".smtx.gz" if name.startswith("b") else ".smtx"
    write_smtx(d / f"{name}{ext}", M, K, indptr, np.nonzero(mask)[1])


@pytest.fixture
def dlmc_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "dlmc"
    for sp in ("0.9", "0.95"):
        _smtx(root, "rn50", sp, "bottleneck_1_block_group1_1_1", 16, 32, 0.1, rng)
        _smtx(root, "rn50", sp, "bottleneck_2_block_group1_1_1", 16, 36, 0.1, rng)
        _smtx(root, "rn50", sp, "bottleneck_projection_block_group_projection_block_group1", 24, 8, 0.1, rng)
        _smtx(root, "rn50", sp, "initial_conv", 8, 27, 0.1, rng)
        _smtx(root, "rn50", sp, "final_dense", 10, 16, 0.1, rng)
        _smtx(root, "transformer", sp, "body_encoder_layer_0_ffn_conv1_fully_connected", 24, 16, 0.1, rng)
    (root / "rn50" / "magnitude_pruning" / "0.9" / "notes.txt").write_text("not a matrix")
    (root / "rn50_batchsizes.txt").write_text(
        "bottleneck_1_block_group1_1_1,5\nbottleneck_2_block_group1_1_1,5\n"
        "bottleneck_projection_block_group_projection_block_group1,3\nfinal_dense,1\ninitial_conv,7\n")
    return root


def test_walker_finds_and_classifies(dlmc_dir):
    found = dlmc_bench.find_matrices(dlmc_dir)
    kinds = {(m.model, m.sparsity, m.name): m.kind for m in found}
    assert len(found) == 12
    assert kinds[("rn50", "0.9", "bottleneck_1_block_group1_1_1")] == "1x1"
    assert kinds[("rn50", "0.95", "bottleneck_projection_block_group_projection_block_group1")] == "1x1"
    assert kinds[("rn50", "0.9", "bottleneck_2_block_group1_1_1")] == "3x3"
    assert kinds[("rn50", "0.9", "initial_conv")] == "7x7"
    assert kinds[("rn50", "0.9", "final_dense")] == "fc"
    assert kinds[("transformer", "0.9", "body_encoder_layer_0_ffn_conv1_fully_connected")] == "fc"
    only = dlmc_bench.find_matrices(dlmc_dir, ["rn50"], ["0.95"])
    assert {m.sparsity for m in only} == {"0.95"} and {m.model for m in only} == {"rn50"}

    # one named matrix, plain or gzipped; a missing one names the path it looked for
    assert dlmc_bench.find_matrix(dlmc_dir, "rn50", "0.9", "final_dense").name == "final_dense.smtx"
    assert dlmc_bench.find_matrix(dlmc_dir, "rn50", "0.9", "bottleneck_1_block_group1_1_1").name \
        == "bottleneck_1_block_group1_1_1.smtx.gz"
    with pytest.raises(FileNotFoundError, match="rn50/magnitude_pruning/0.8/final_dense"):
        dlmc_bench.find_matrix(dlmc_dir, "rn50", "0.8", "final_dense")

    cases = dlmc_bench.make_cases(found, dlmc_bench.read_batch_sizes(dlmc_dir), ["float32", "float16"])
    names = {c.matrix.name for c in cases}
    assert "bottleneck_2_block_group1_1_1" not in names and "initial_conv" not in names
    ns = {(c.matrix.name, c.n_group): c.N for c in cases if c.matrix.sparsity == "0.9"}
    assert ns[("bottleneck_1_block_group1_1_1", "batch1")] == 5
    assert ns[("bottleneck_1_block_group1_1_1", "batch8")] == 40
    assert ns[("final_dense", "batch8")] == 8
    assert ns[("body_encoder_layer_0_ffn_conv1_fully_connected", "N=2048")] == 2048
    assert len(cases) == 2 * 2 * 4 * 2                 # dtypes x sparsities x matrices x N
    assert [c.dtype for c in cases[:len(cases) // 2]] == ["float32"] * (len(cases) // 2)
    quick = dlmc_bench.make_cases(found, dlmc_bench.read_batch_sizes(dlmc_dir), ["float32"],
                                  dlmc_bench.QUICK)
    assert {c.matrix.name for c in quick} <= set(dlmc_bench.QUICK["rn50"] + dlmc_bench.QUICK["transformer"])
    parts = [dlmc_bench.shard(cases, f"{i}/3") for i in (1, 2, 3)]
    assert all(parts) and sum(len(p) for p in parts) == len(cases)
    assert not set(c.key for c in parts[0]) & set(c.key for c in parts[1])
    with pytest.raises(FileNotFoundError, match="magnitude_pruning"):
        dlmc_bench.find_matrices(dlmc_dir / "rn50")


def test_runner_writes_checked_rows_and_resumes(dlmc_dir, tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    found = dlmc_bench.find_matrices(dlmc_dir, sparsities=["0.9"])
    cases = dlmc_bench.make_cases(found, dlmc_bench.read_batch_sizes(dlmc_dir), ["float32"],
                                  match="bottleneck_1|ffn_conv1")
    cases = [dlmc_bench.Case(c.matrix, min(c.N, 24), c.n_group, c.dtype) for c in cases]   # interpreter
    seen = []

    def fake_time(make_call, X, nbytes):
        f = make_call(X)
        f()
        seen.append(nbytes)
        return timing.Timing(4.0, 6.0, 1, "fake")

    out = tmp_path / "out.csv"
    opt = dlmc_bench.Options(tune_kwargs=dict(budget_s=0.0))
    runner = dlmc_bench.Runner(out, opt, time_fn=fake_time, tune_timer=lambda fn: (fn(), 2.0)[1],
                               device=device, progress=False)
    assert runner.run(cases) == len(cases)
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == dlmc_bench.COLUMNS
    rows = list(csv.DictReader(open(out, newline="")))
    assert len(rows) == len(cases) * len(dlmc_bench.SYSTEMS)
    for r in rows:
        assert r["median_us"] == "4" and r["eager_us"] == "6", r
        if r["system"].startswith("sparsert"):
            assert r["schedule"].startswith("Schedule(") and float(r["compile_s"]) >= 0
        else:
            assert r["schedule"] == "" and r["compile_s"] == ""
    assert all(n > 0 for n in seen)
    assert (tmp_path / "out.tune.jsonl").exists()
    done = dlmc_bench.done_keys(out)
    assert done == {c.key for c in cases}


def test_runner_skips_unreadable_matrices_and_goes_on(dlmc_dir, tmp_path, monkeypatch, capsys,
                                                     device):
    """An empty file (no header) and a broken gzip among the matrices: their cases are
    skipped, each file named once on stderr with why, and every other case still runs."""
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    folder = dlmc_dir / "transformer" / "magnitude_pruning" / "0.9"
    empty = folder / "body_encoder_layer_1_ffn_conv1_fully_connected.smtx"
    empty.write_text("")
    broken = folder / "body_encoder_layer_2_ffn_conv1_fully_connected.smtx.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    found = dlmc_bench.find_matrices(dlmc_dir, ["transformer"], ["0.9"])
    assert len(found) == 3
    good = next(m.path for m in found if "layer_0" in m.name)
    # --per-shape reads every header first: the bad files are named and left out there
    kept = dlmc_bench.make_cases(found, {}, ["float32"], per_shape=5)
    assert {c.matrix.path for c in kept} == {good}
    err = capsys.readouterr().err
    assert f"skipped {empty}: unreadable" in err and f"skipped {broken}: unreadable" in err
    # the runner meets them while running (two N per matrix)
    cases = [dlmc_bench.Case(c.matrix, n, c.n_group, c.dtype)
             for c, n in zip(dlmc_bench.make_cases(found, {}, ["float32"]), [8, 12] * 3)]
    assert len(cases) == 6 and cases[0].matrix.path != cases[2].matrix.path
    out = tmp_path / "o.csv"
    runner = dlmc_bench.Runner(out, dlmc_bench.Options(systems=("triton_csr",)), device=device,
                               time_fn=lambda m, X, b: timing.Timing(1.0, 2.0, 1, "fake"),
                               progress=False)
    assert runner.run(cases) == 2
    assert set(runner.unreadable) == {str(empty), str(broken)}
    assert "bad header ''" in runner.unreadable[str(empty)]
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["matrix"], r["N"], r["median_us"]) for r in rows] == \
        [("body_encoder_layer_0_ffn_conv1_fully_connected", n, "1") for n in ("8", "12")]
    err = capsys.readouterr().err
    assert err.count(f"skipped {empty}: unreadable (ValueError") == 1
    assert err.count(f"skipped {broken}: unreadable") == 1 and "going on" in err


def test_runner_records_failed_checks_without_timing(dlmc_dir, tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    found = dlmc_bench.find_matrices(dlmc_dir, ["transformer"], ["0.9"])
    case = dlmc_bench.Case(found[0], 8, "N=256", "float32")

    def broken(weight, X, dtype):
        return lambda: torch.zeros(weight.M, X.shape[1], device=X.device) + 1.0
    monkeypatch.setattr(baselines, "cusparse", broken)
    timed = []
    opt = dlmc_bench.Options(systems=("cusparse", "triton_csr"))
    runner = dlmc_bench.Runner(tmp_path / "o.csv", opt,
                               time_fn=lambda m, X, b: (timed.append(1), timing.Timing(1.0, 2.0, 1, "fake"))[1],
                               device=device, progress=False)
    med = runner.run_case(case)
    assert med["cusparse"] is None and med["triton_csr"] == 1.0 and len(timed) == 1
    rows = {r["system"]: r for r in csv.DictReader(open(tmp_path / "o.csv", newline=""))}
    assert rows["cusparse"]["schedule"].startswith("FAILED") and rows["cusparse"]["median_us"] == ""


# ------------------------------------------------------------------ report

def _synthetic_csv(path):
    rows = []

    def add(matrix, model, sp, N, dtype, times, M=64, K=256, nnz=1638):
        for system, t in times.items():
            rows.append({"matrix": matrix, "model": model, "sparsity": sp, "M": M, "K": K, "N": N,
                         "nnz": nnz, "dtype": dtype, "system": system,
                         "median_us": "" if t is None else t, "eager_us": "" if t is None else t + 4,
                         "compile_s": 2.5 if system.startswith("sparsert") else "",
                         "schedule": "Schedule(mode='values')" if system.startswith("sparsert")
                         else ("FAILED: error ratio 9 > 1" if t is None else "")})
    # rn50 batch 1 at 0.9: speedups over dense 2x and 8x -> geomean 4x
    add("l1", "rn50", "0.9", 3136, "float32", {"dense": 20, "dense_tf32": 10, "cusparse": 40,
                                               "triton_csr": 15, "sparsert_default": 12, "sparsert": 10})
    add("l2", "rn50", "0.9", 784, "float32", {"dense": 40, "dense_tf32": 10, "cusparse": None,
                                              "triton_csr": 15, "sparsert_default": 12, "sparsert": 5})
    add("l1", "rn50", "0.9", 25088, "float32", {"dense": 60, "sparsert": 10})           # batch 8: 6x
    add("l2", "rn50", "0.9", 6272, "float32", {"dense": 30, "sparsert": 10})            # batch 8: 3x
    add("t", "transformer", "0.95", 2048, "float32", {"dense": 90, "dense_tf32": 20, "sparsert": 15})
    add("t", "transformer", "0.95", 2048, "float16", {"dense": 9, "sparsert": 15})
    add("t", "transformer", "0.98", 2048, "float16", {"dense": 9, "sparsert": 6})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=dlmc_bench.COLUMNS)
        w.writeheader()
        w.writerows(rows)


def test_report_geomeans_targets_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    csv_path = tmp_path / "dlmc.csv"
    _synthetic_csv(csv_path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "RESULTS.md").write_text("# Results\n\nNotes kept by hand.\n")
    assert report.main(["--csv", str(csv_path), "--results-dir", str(results)]) == 0
    md = (results / "RESULTS.md").read_text()
    assert "Notes kept by hand." in md and md.count(report.BEGIN) == 1
    line = next(l for l in md.splitlines() if l.startswith("| float32 | rn50 | batch1 | 90% |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "2" and cells[5] == "4.00x"            # geomean of 2x and 8x
    assert cells[7] == "4.00x"                                # cusparse: only l1 was timed
    assert cells[8] == "2.12x"                                # triton_csr: sqrt(1.5 * 3)
    b8 = next(l for l in md.splitlines() if l.startswith("| float32 | rn50 | batch8 | 90% |"))
    assert "4.24x" in b8                                      # sqrt(6 * 3)
    assert "FAILED" in md                                     # the failed cusparse row is listed
    assert "float16 transformer N=2048: sparsert beats dense from 98%" in md
    tgt = next(l for l in md.splitlines() if l.startswith("| RN50 batch 1, fp32, 0.9: vs dense"))
    assert "4.00x" in tgt and "| yes |" in tgt
    for name in ("speedup_vs_sparsity_float32.png", "roofline_float32.png",
                 "speedup_vs_sparsity_float16.png", "roofline_float16.png"):
        data = (results / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # running again replaces the section instead of appending a second one
    report.main(["--csv", str(csv_path), "--results-dir", str(results), "--no-plots"])
    assert (results / "RESULTS.md").read_text().count(report.BEGIN) == 1


def test_merge_shards_joins_rows_and_meta(tmp_path):
    """A sharded suite (``scripts/gpu.sh suite``) becomes one CSV and one meta file: every
    row once under one header, cases and wall time summed, both shards named."""
    whole = tmp_path / "whole.csv"
    _synthetic_csv(whole)
    with open(whole, newline="") as f:
        rows = list(csv.DictReader(f))
    shards = [tmp_path / "s1.csv", tmp_path / "s2.csv"]
    for i, (path, part) in enumerate(zip(shards, (rows[:5], rows[5:]))):
        report.write_rows(path, dlmc_bench.COLUMNS, part)
        path.with_suffix(".meta.json").write_text(json.dumps(
            {"args": {"shard": f"{i + 1}/2", "tune_budget": 1.5}, "cases": 3 + i, "cases_run": 3,
             "wall_s": 10.5, "rows": len(part), "started": f"t{i}", "finished": f"f{i}",
             "unreadable": {f"/d/m{i}.smtx": "ValueError: bad header ''"}}))
    out = tmp_path / "merged.csv"
    assert report.main(["--merge", *map(str, shards), "--csv", str(out), "--merge-only"]) == 0
    with open(out, newline="") as f:
        assert list(csv.DictReader(f)) == rows
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["args"] == {"shard": "1/2 + 2/2", "tune_budget": 1.5}
    assert (meta["cases"], meta["cases_run"], meta["wall_s"], meta["rows"]) == (7, 6, 21.0, len(rows))
    assert (meta["started"], meta["finished"], meta["error"]) == ("t0", "f1", None)
    assert set(meta["unreadable"]) == {"/d/m0.smtx", "/d/m1.smtx"}
    report.main(["--csv", str(out), "--results-dir", str(tmp_path), "--no-plots"])
    assert "Skipped, unreadable: `m0.smtx` (ValueError: bad header '')" in \
        (tmp_path / "RESULTS.md").read_text()
    with pytest.raises(SystemExit):     # a missing shard is named, nothing is written
        report.main(["--merge", str(tmp_path / "nope.csv"), "--csv", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_geomean_ignores_missing():
    assert report.geomean([2.0, 8.0, None, float("nan")]) == pytest.approx(4.0)
    assert math.isnan(report.geomean([]))


@cpu_only
def test_cli_needs_a_gpu_and_checks_arguments(dlmc_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit):
        dlmc_bench.main(["--dlmc", str(dlmc_dir), "--models", "vgg"])
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET|CUDA"):
        dlmc_bench.main(["--dlmc", str(dlmc_dir), "--out", str(tmp_path / "o.csv")])


# ------------------------------------------------------------------ on the GPU

@pytest.mark.gpu
def test_gpu_timing_and_baselines(device):
    for dtype in ("float32", "float16"):
        w = _weight(256, 512, 0.1, baselines.DTYPES[dtype])
        X = torch.randn(512, 1024).to(baselines.DTYPES[dtype]).to(device)
        ref, mag = reference_and_magnitude(w, X)
        for name, fn in baselines.SYSTEMS.items():
            if not baselines.applies(name, dtype):
                continue
            tol = 5e-3 if name == "dense_tf32" else None
            assert check_result(fn(w, X, dtype)(), ref, mag, dtype, tol)[0], (name, dtype)
            t = timing.time_system(lambda x, fn=fn: fn(w, x, dtype), X, 2 * 512 * 1024 * 4)
            assert 0 < t.median_us < 10_000 and 0 < t.eager_us < 100_000, (name, t)
            assert t.method in ("graph", "events") and t.buffers >= 1


@pytest.mark.gpu
def test_gpu_runner_end_to_end(dlmc_dir, tmp_path, monkeypatch, device):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    found = dlmc_bench.find_matrices(dlmc_dir, sparsities=["0.9"])
    cases = dlmc_bench.make_cases(found, dlmc_bench.read_batch_sizes(dlmc_dir),
                                  ["float32", "float16"], match="bottleneck_1")
    out = tmp_path / "gpu.csv"
    runner = dlmc_bench.Runner(out, dlmc_bench.Options(tune_budget=2.0, max_compile_s=5.0),
                               device=device, progress=False)
    assert runner.run(cases) == len(cases)
    rows = list(csv.DictReader(open(out, newline="")))
    bad = [r for r in rows if r["median_us"] == ""]
    assert not bad, bad
    assert {r["system"] for r in rows} == set(dlmc_bench.SYSTEMS)
    assert report.main(["--csv", str(out), "--results-dir", str(tmp_path), "--dlmc", str(dlmc_dir)]) == 0
