"""bench/eager_bench.py on the CPU: the smoke run (interpreter, tiny shapes) checks outputs and
writes the CSV with the agreed columns; the RESULTS.md section writer; the launch stub and
the model profile of bench/host_profile.py."""
import csv
import os

import pytest
import torch

from bench import eager_bench, host_profile

pytestmark = pytest.mark.skipif(os.environ.get("SPARSERT_TEST_DEVICE", "cpu") != "cpu",
                                reason="the smoke run is the CPU/interpreter mode")


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def test_smoke_run_writes_checked_rows(tmp_path):
    out, md = tmp_path / "eager.csv", tmp_path / "RESULTS.md"
    assert eager_bench.main(["--smoke", "--out", str(out), "--results-md", str(md)]) == 0
    header, rows = read(out)
    assert header == ["model", "layer", "dtype", "N", "system", "eager_us", "graph_us"]
    assert {r["system"] for r in rows} == {"dense", "sparse"}
    assert {r["dtype"] for r in rows} == {"float16", "float32"}
    layer_rows = [r for r in rows if r["layer"]]
    model_rows = [r for r in rows if not r["layer"]]
    assert {int(r["N"]) for r in layer_rows} == {1, 3}
    # the default output layout ("rows") in the plain rows, the other one in y-columns
    assert {r["layer"] for r in layer_rows} == {"16x32", "16x32/x-in-place", "16x32/y-columns"}
    assert {r["model"] for r in model_rows} >= {"bert-base/y-columns"} or \
        {r["model"] for r in model_rows} >= {"mlp/y-columns"}
    assert model_rows and {int(r["N"]) for r in model_rows} == {3, 6}   # batch 1, 2 x seq 3
    assert all(float(r["eager_us"]) > 0 and r["graph_us"] == "" for r in rows)
    text = md.read_text()
    assert text.count(eager_bench.BEGIN) == 1 and "| 16x32/x-in-place |" in text


def test_a_mismatch_fails_the_run():
    rows = []
    cases = [("m", "l", "float32", 2, "dense", lambda: torch.ones(3)),
             ("m", "l", "float32", 2, "sparse", lambda: torch.ones(3) * 1.01)]
    assert not eager_bench.measure(cases, False, 1, rows)
    assert len(rows) == 2


def test_results_section_replaces_only_its_own(tmp_path):
    csv_path, md = tmp_path / "eager_h100.csv", tmp_path / "RESULTS.md"
    eager_bench.write_rows(csv_path, eager_bench.COLUMNS, [
        dict(model="bert-base", layer="768x3072", dtype="float32", N=128, system="dense",
             eager_us="20.0", graph_us="10.0"),
        dict(model="bert-base", layer="768x3072", dtype="float32", N=128, system="sparse",
             eager_us="25.0", graph_us="5.0"),
        dict(model="bert-base", layer="", dtype="float16", N=1024, system="dense",
             eager_us="4000", graph_us=""),
        dict(model="bert-base", layer="", dtype="float16", N=1024, system="sparse",
             eager_us="5000", graph_us="")])
    md.write_text("# Results\n\n<!-- dlmc-bench:begin -->\nkept\n<!-- dlmc-bench:end -->\n\n"
                  "tail\n")
    first = eager_bench.write_results_section(csv_path, md)
    assert "| bert-base | 768x3072 | float32 | 128 | 20.0 | 25.0 | 0.80x | 10.0 | 5.0 |" in first
    assert "| bert-base | (model) | float16 | 1024 | 4000.0 | 5000.0 | 0.80x | - | - |" in first
    eager_bench.write_results_section(csv_path, md)      # rewritten in place, not appended
    text = md.read_text()
    assert text.count(eager_bench.BEGIN) == 1 and text.count(eager_bench.END) == 1
    assert "kept" in text and "tail" in text and text.index("kept") < text.index("tail")


def test_stubbed_launches_leave_the_host_path_only(monkeypatch):
    """Under the stub a layer call runs no kernel (its output is not written: a NaN-filled
    allocation stays NaN); afterwards the same layer computes again."""
    from sparsert_triton.runtime import direct
    from sparsert_triton.nn import SparseLinear
    original = direct.Launcher.__call__
    layer = SparseLinear.from_linear(eager_bench.pruned_linear(16, 32, torch.float32, "cpu"))
    x = torch.randn(3, 16)
    ref = layer.to_linear()(x)
    real_empty, real_empty_strided = torch.empty, torch.empty_strided

    def nan_empty(*a, **kw):
        return real_empty(*a, **kw).fill_(float("nan"))

    def nan_empty_strided(*a, **kw):      # a row-major output's allocation
        return real_empty_strided(*a, **kw).fill_(float("nan"))
    with torch.no_grad():
        layer(x)
        with host_profile.stubbed_launches(), monkeypatch.context() as patch:
            patch.setattr(torch, "empty", nan_empty)
            patch.setattr(torch, "empty_strided", nan_empty_strided)
            stubbed = [layer(x) for _ in range(3)]
        after = layer(x)
    assert direct.Launcher.__call__ is original
    assert all(torch.isnan(y).all() for y in stubbed)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)


def test_model_host_profile_reports_every_layer_planned():
    """The in-model profile (a tiny BertModel, launches stubbed): every sparse layer's calls
    after the warm-up run planned, the query/key/value projections share one transposing
    copy per block, and the extra aten ops are counted. With the default output layout
    ("rows") every layer reads a row-major input (one transposing copy each, q/k/v one
    together) and the sparse model runs no kernel op beyond the dense one but those copies;
    with "columns" the output projection reads the GELU's output in place, but the attention
    takes its math path and more kernel ops run."""
    pytest.importorskip("transformers")
    sizes = dict(hidden=32, heads=2, intermediate=64)
    r = host_profile.model_host_profile(3, layers=2, seq=8, batch=2, sizes=sizes)
    c = host_profile.model_host_profile(3, layers=2, seq=8, batch=2, sizes=sizes,
                                       output_layout="columns")
    assert (r["output_layout"], c["output_layout"]) == ("rows", "columns")
    for p in (r, c):
        assert len(p["layers"]) == 12
        assert all(v["planned"] == 3 and v["checked"] == 0 for v in p["layers"].values())
        assert p["in_model_us"] > 0 and p["alone_us"] > 0
    # planned calls run the output's allocation and the shared copies: fewer aten ops than
    # nn.Linear's; with "columns" the attention's math path and the views add more
    assert r["aten_sparse"] < r["aten_dense"] < c["aten_sparse"]
    assert [v["input"] for v in r["layers"].values()] == ["rows"] * 12
    assert [v["input"] for v in c["layers"].values()][:6] == ["rows"] * 5 + ["columns"]
    # per block: one copy for query/key/value (two shared), attention output, intermediate,
    # and with "rows" the FFN's output projection
    assert (r["copies_per_forward"], r["shared_per_forward"]) == (8, 4)
    assert (c["copies_per_forward"], c["shared_per_forward"]) == (6, 4)
    # kernel ops beyond the dense model: copies only with "rows"; the attention's unfused
    # math path and the copies of transposed outputs with "columns"
    assert r["attention_math"] == 0 and c["attention_math"] == 2
    assert {op for op, d in r["extra_kernel_ops"].items() if d > 0} <= {"aten::copy_"}
    assert r["extra_kernel_ops"]["aten::addmm"] == -12         # the products the kernels run
    assert {"aten::bmm", "aten::copy_"} <= {op for op, d in c["extra_kernel_ops"].items()
                                             if d > 0}
    assert r["kernel_ops_sparse"] + 2 * 8 <= c["kernel_ops_sparse"]
    assert r["aten_sparse"] < c["aten_sparse"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_row_major_outputs_take_the_planned_launch(monkeypatch, dtype):
    """With launches as on a GPU (stubbed), a "rows" layer's calls after the first of each
    layout run planned and launch the compiled kernel directly (never the general launch
    path), one token or several, and a planned call runs no more aten ops than a "columns"
    call (its row-major output allocated in one op: no extra transposes per call); an input
    read in place (one token) runs the output's allocation alone, with no views."""
    from torch.profiler import ProfilerActivity, profile
    from sparsert_triton.runtime import callplan
    from sparsert_triton.nn import SparseLinear
    general = []
    real_run = callplan.run
    monkeypatch.setattr(callplan, "run", lambda *a: general.append(1) or real_run(*a))
    lin = eager_bench.pruned_linear(16, 32, dtype, "cpu")
    layers = {o: SparseLinear.from_linear(lin, output_layout=o) for o in ("rows", "columns")}

    def ops_of(fn):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        return sorted(e.name for e in prof.events() if e.name.startswith("aten::"))
    with host_profile.stubbed_launches(), torch.no_grad():
        for N in (1, 5):
            x = torch.randn(N, 16, dtype=dtype)
            seen = {}
            for layout, layer in layers.items():
                p = layer._pattern
                layer(x.view(x.shape))
                layer(x.view(x.shape))           # the plan's first launch finds the kernel
                general.clear()
                planned = p.planned_calls
                for _ in range(3):
                    layer(x.view(x.shape))
                assert p.planned_calls - planned == 3 and general == [], (layout, N)
                seen[layout] = ops_of(lambda: layer(x.view(x.shape)))
            assert len(seen["rows"]) <= len(seen["columns"]), seen
            if N == 1:       # an input read in place: the harness's view and the output only
                assert seen["rows"] == ["aten::empty", "aten::view"], seen


def test_interleaved_timing_spreads_a_slow_spell():
    """A slow spell of the machine longer than half the rounds raises no case's time when
    the cases are timed round-robin and each keeps its fastest round (their median would
    double); timed one after the other, a spell as long as one case's windows doubles the
    one case it falls on."""
    clock = iter(range(1000))

    def timer(fn):                      # windows 3-14 run on a machine twice as slow
        return fn() * (2 if 3 <= next(clock) <= 14 else 1)
    fns = [lambda: 10.0, lambda: 20.0, lambda: 30.0, lambda: 40.0]
    assert eager_bench.interleaved_times(fns, timer, 5) == [10.0, 20.0, 30.0, 40.0]
    clock = iter(range(1000))
    slow = lambda: 2 if 5 <= next(clock) <= 9 else 1      # noqa: E731: one case's 5 windows
    one_by_one = [eager_bench.interleaved_times([f], lambda fn: fn() * slow(), 5)[0]
                  for f in fns]
    assert one_by_one == [10.0, 40.0, 30.0, 40.0]


def test_a_part_of_the_run_and_rows_written_as_they_finish(tmp_path):
    out = tmp_path / "part.csv"
    assert eager_bench.main(["--smoke", "--out", str(out), "--results-md", "",
                             "--dtypes", "float32", "--tokens", "3", "--batches", ""]) == 0
    _, rows = read(out)
    assert {(r["dtype"], int(r["N"])) for r in rows} == {("float32", 3)}
    assert all(r["layer"] for r in rows) and len(rows) == 4    # dense and three sparse rows

    written = []
    cases = [(m, "l", "float32", n, s, lambda: torch.ones(3))
             for m, n in (("a", 1), ("b", 2)) for s in ("dense", "sparse")]
    assert eager_bench.measure(cases, False, 1, [], done=lambda rs: written.append(len(rs)))
    assert written == [2, 4]          # after each comparison, what was measured so far


@pytest.mark.parametrize("flag,value", [("--dtypes", "float64"), ("--dtypes", ""),
                                        ("--tokens", "1,x"), ("--batches", "0")])
def test_a_bad_part_is_refused_naming_its_option(flag, value, capsys):
    with pytest.raises(SystemExit):
        eager_bench.main(["--smoke", "--out", "/nonexistent/x.csv", flag, value])
    assert flag in capsys.readouterr().err
