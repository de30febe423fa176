"""The conv and end-to-end summaries: geometric means, the target line, marked sections."""
import csv
import math

from bench import summaries


def _conv_rows():
    rows = []
    for layer, (cd, sr) in {"a": (40.0, 10.0), "b": (10.0, 10.0)}.items():
        for system, t in (("cudnn", cd), ("sparsert", sr), ("cudnn_tf32", "")):
            rows.append(dict(layer=layer, sparsity="0.9", batch="1", dtype="float32",
                             system=system, median_us=str(t)))
    return rows


def test_conv_summary_geomean_and_target():
    md = summaries.conv_markdown(_conv_rows(), "conv.csv", target=5.0)
    # per layer 4x and 1x: geometric mean 2x; an untimed baseline shows as "-"
    assert "| float32 | 90% | 1 | 2 | 2.00x | - | - | 4.00x | 1.00x |" in md
    assert "measured 2.00x over 2 layer/batch cases: **not met**" in md
    assert "**met**" in summaries.conv_markdown(_conv_rows(), "conv.csv", target=1.5)


def test_marked_sections_are_replaced_in_place(tmp_path):
    p = tmp_path / "RESULTS.md"
    p.write_text("# Results\n\nintro\n")
    one = summaries.conv_markdown(_conv_rows(), "one.csv")
    summaries.write_marked(p, one)
    summaries.write_marked(p, one.replace("one.csv", "two.csv"))
    text = p.read_text()
    assert text.startswith("# Results\n\nintro\n")
    assert text.count("conv-bench:begin") == 1 and "two.csv" in text and "one.csv" not in text


def test_e2e_summary_lists_every_row(tmp_path):
    path = tmp_path / "e2e.csv"
    cols = ["model", "batch", "mode", "timing", "dense_ms", "sparse_ms", "speedup", "rel_err",
            "sparse_layers"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerow(dict(model="bert", batch=1, mode="eager", timing="graph", dense_ms=0.2,
                        sparse_ms=0.1, speedup=2.0, rel_err=1e-7, sparse_layers=4))
    md = summaries.e2e_markdown(summaries._rows(path), ["e2e.csv"])
    assert "| bert | 1 | eager | graph | 0.200 | 0.100 | 2.00x | 1.0e-07 | 4 |" in md
    assert math.isclose(summaries._num("2.5"), 2.5) and summaries._num("") != summaries._num("")
