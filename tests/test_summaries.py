"""The conv and end-to-end summaries: geometric means, the target line, marked sections."""
import csv
import json
import math
import re
from pathlib import Path

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
    assert text.endswith("\n")        # a section without a final newline still ends the file


def test_marked_section_without_final_newline_keeps_the_file_ending(tmp_path):
    p = tmp_path / "RESULTS.md"
    section = "<!-- x:begin -->\nbody\n<!-- x:end -->"
    summaries.write_marked(p, section)
    summaries.write_marked(p, section.replace("body", "new"))
    assert p.read_text().endswith("new\n<!-- x:end -->\n")


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


# ------------------------------------------------------------------ docs that cannot go stale

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def test_results_md_tables_are_the_ones_the_canonical_csvs_give():
    """Every marked table of RESULTS.md is what report/summaries write from the CSVs kept in
    bench/results (run them again after a new measurement)."""
    from bench import report
    text = (RESULTS / "RESULTS.md").read_text()
    rows = report.load(RESULTS / summaries.CANONICAL["dlmc"])
    report.n_groups(rows)
    meta = json.loads((RESULTS / "dlmc_h100.meta.json").read_text())
    plots = [RESULTS / f"{kind}_{dtype}.png" for dtype in ("float32", "float16")
             for kind in ("speedup_vs_sparsity", "roofline")]
    assert all(p.exists() for p in plots)
    dlmc = report.markdown(rows, report.by_case(rows), RESULTS / summaries.CANONICAL["dlmc"],
                           plots, meta)
    conv = summaries.conv_markdown(summaries._rows(RESULTS / summaries.CANONICAL["conv"]),
                                   summaries.CANONICAL["conv"])
    e2e_files = summaries.CANONICAL["e2e"]
    e2e = summaries.e2e_markdown([r for p in e2e_files for r in summaries._rows(RESULTS / p)],
                                 list(e2e_files))
    for section in (dlmc, conv, e2e):
        assert section.rstrip("\n") in text, section.splitlines()[0]


def test_readme_results_block_is_the_one_the_canonical_csvs_give():
    """README.md's results block is written by `python -m bench.summaries --readme README.md`
    from the same CSVs as RESULTS.md; a stale README fails here."""
    readme = (ROOT / "README.md").read_text()
    block = summaries.readme_markdown()
    assert block.rstrip("\n") in readme, "stale: run python -m bench.summaries --readme README.md"
    # the same figure in both documents: fp32 at 90% against cuSPARSE over all cases
    target = next(line for line in (RESULTS / "RESULTS.md").read_text().splitlines()
                  if line.startswith("| all, fp32, 0.9: vs cusparse |"))
    row90 = next(line for line in block.splitlines() if line.startswith("| 90% |"))
    assert target.split("|")[3].strip() == row90.split("|")[5].strip()


def test_readme_block_follows_the_data(tmp_path):
    """Halving every sparse convolution time doubles the README's convolution figures."""
    import shutil
    for name in (summaries.CANONICAL["dlmc"], summaries.CANONICAL["conv"],
                 *summaries.CANONICAL["e2e"], summaries.CANONICAL["eager"]):
        shutil.copy(RESULTS / name, tmp_path / name)
    conv = tmp_path / summaries.CANONICAL["conv"]
    rows = summaries._rows(conv)
    for r in rows:
        if r["system"] == "sparsert" and r["median_us"]:
            r["median_us"] = str(float(r["median_us"]) / 2)
    with open(conv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = re.search(r"([\d.]+)x geomean", summaries.readme_markdown()).group(1)
    after = re.search(r"([\d.]+)x geomean", summaries.readme_markdown(tmp_path)).group(1)
    assert abs(float(after) - 2 * float(before)) < 0.011


def test_readme_eager_line_follows_the_data(tmp_path):
    """The eager line gives dense / sparse time of the whole-model rows (not the layer rows,
    not the variants), per dtype in N order; a dtype missing a row is left out."""
    path = tmp_path / "eager.csv"
    rows = [("bert-base", "", "float16", 128, "dense", 400),
            ("bert-base", "", "float16", 128, "sparse", 200),
            ("bert-base", "", "float16", 1024, "dense", 300),
            ("bert-base", "", "float16", 1024, "sparse", 400),
            ("bert-base/x-in-place", "", "float16", 128, "sparse", 1),
            ("bert-base", "768x3072", "float16", 128, "sparse", 1),
            ("bert-base", "", "float32", 128, "dense", 100)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "layer", "dtype", "N", "system", "eager_us", "graph_us"])
        w.writerows([(*r, "") for r in rows])
    line = summaries._eager_line(path)
    assert "runs at 2.00x / 0.75x (float16) the dense model's speed at 128 / 1024 tokens" in line
    assert "float32" not in line
