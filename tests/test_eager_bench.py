"""bench/eager_bench.py on the CPU: the smoke run (interpreter, tiny shapes) checks outputs and
writes the CSV with the agreed columns; the RESULTS.md section writer; the launch stub of the
host profile."""
import csv
import os

import pytest
import torch

from bench import eager_bench

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
    assert {r["layer"] for r in layer_rows} == {"16x32", "16x32/x-in-place", "16x32/y-rows"}
    assert {r["model"] for r in model_rows} >= {"bert-base/y-rows"} or \
        {r["model"] for r in model_rows} >= {"mlp/y-rows"}
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
    from sparsert_triton import direct
    from sparsert_triton.nn import SparseLinear
    original = direct.Launcher.__call__
    layer = SparseLinear.from_linear(eager_bench.pruned_linear(16, 32, torch.float32, "cpu"))
    x = torch.randn(3, 16)
    ref = layer.to_linear()(x)
    real_empty = torch.empty

    def nan_empty(*a, **kw):
        return real_empty(*a, **kw).fill_(float("nan"))
    with torch.no_grad():
        layer(x)
        with eager_bench.stubbed_launches(), monkeypatch.context() as patch:
            patch.setattr(torch, "empty", nan_empty)
            stubbed = [layer(x) for _ in range(3)]
        after = layer(x)
    assert direct.Launcher.__call__ is original
    assert all(torch.isnan(y).all() for y in stubbed)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)


def test_model_host_profile_reports_every_layer_planned():
    """The in-model profile (a tiny BertModel, launches stubbed): every sparse layer's calls
    after the warm-up run planned, the query/key/value projections share one transposing
    copy per block, and the extra aten ops are counted."""
    pytest.importorskip("transformers")
    sizes = dict(hidden=32, heads=2, intermediate=64)
    r = eager_bench.model_host_profile(3, layers=2, seq=8, batch=2, sizes=sizes)
    assert len(r["layers"]) == 12
    assert all(v["planned"] == 3 and v["checked"] == 0 for v in r["layers"].values())
    assert [v["input"] for v in r["layers"].values()][:6] == ["rows"] * 5 + ["columns"]
    # per block: one copy for query/key/value (two shared), attention output, intermediate
    assert (r["copies_per_forward"], r["shared_per_forward"]) == (6, 4)
    assert r["aten_sparse"] > r["aten_dense"] and r["in_model_us"] > 0 and r["alone_us"] > 0
