"""Plots of sparsert_triton.viz: they draw what they claim and save to files."""
import csv
import math

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsert_triton import Schedule, viz  # noqa: E402
from sparsert_triton.compiler.canonicalise import plan_for  # noqa: E402
from sparsert_triton.dlmc import read_smtx  # noqa: E402
from sparsert_triton.compiler.specialise import specialise  # noqa: E402

DATA = "data/bottleneck_2_block_group1_1_1.smtx.gz"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _weight(M=23, K=37, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    W[5] = 0.0                                   # an empty row
    return W


def _saved(ax, path):
    ax.figure.savefig(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return data


def test_spy_shows_the_mask_exactly(tmp_path):
    W = _weight()
    ax = viz.spy(W)
    img = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(img, (W != 0).numpy().astype(float))
    _saved(ax, tmp_path / "spy.png")


def test_spy_bins_large_matrices_into_densities(tmp_path):
    p = read_smtx(DATA)                          # 64 x 576, binned to 64 x 288 at 300 pixels
    ax = viz.spy(p, max_pixels=300)
    img = np.asarray(ax.images[0].get_array())
    assert img.shape == (64, 288)
    assert img.min() >= 0 and img.max() <= 1
    assert img.sum() * 2 == pytest.approx(p.nnz)  # two columns per pixel
    _saved(ax, tmp_path / "spy_binned.png")


def test_row_length_hist_counts_every_row(tmp_path):
    W = _weight()
    ax = viz.row_length_hist(W, bins=5)
    heights = [patch.get_height() for patch in ax.patches]
    assert sum(heights) == W.shape[0]
    _saved(ax, tmp_path / "hist.png")


@pytest.mark.parametrize("mode", ["values", "table"])
@pytest.mark.parametrize("row_order", ["given", "nnz", "cluster"])
@pytest.mark.parametrize("rpp", [1, 4, 8])
def test_row_groups_assign_every_row_once(mode, row_order, rpp):
    W = _weight(M=21)
    w = viz.as_weight(W)
    plan = plan_for(Schedule(mode=mode, rows_per_program=rpp, row_order=row_order), w, 32,
                    "float32")
    group = viz.row_group_of(w, plan)
    assert group.shape == (21,)
    counts = np.bincount(group)
    assert counts.sum() == 21 and counts.max() <= rpp and len(counts) == -(-21 // rpp)
    # the same partition of rows as the specialiser builds
    layout = specialise(w, plan)
    if mode == "table":
        groups = [set(r for r in layout.rows[g * rpp:(g + 1) * rpp] if r >= 0)
                  for g in range(layout.groups)]
    else:
        groups = [set(g.rows) for g in layout.groups]
    ours = [set(np.flatnonzero(group == g)) for g in range(len(counts))]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, ours))


def test_row_groups_plot_colours_rows_by_their_program(tmp_path):
    W = _weight(M=21)
    w = viz.as_weight(W)
    plan = plan_for(Schedule(mode="values", rows_per_program=4, row_order="cluster"), w, 32,
                    "float32")
    group = viz.row_group_of(w, plan)
    ax = viz.row_groups(w, plan)
    img = np.ma.asarray(ax.images[0].get_array())
    band = max(1, w.K // 40)
    mask = (W != 0).numpy()
    for r in range(w.M):
        assert set(img[r, :band].compressed()) == {group[r]}           # every row in the band
        cells = img[r, band + 1:]
        np.testing.assert_array_equal(~np.ma.getmaskarray(cells), mask[r])
        assert set(cells.compressed()) <= {group[r]}
    _saved(ax, tmp_path / "groups.png")


def _results():
    rows = []
    for i, (s, sp_dense, sp_cusparse) in enumerate([(0.7, 1.5, 3.0), (0.7, 2.0, 3.0),
                                                      (0.9, 4.0, 5.0), (0.9, 9.0, 5.0)]):
        ours = 10.0
        for system, t in (("sparsert", ours), ("dense", ours * sp_dense),
                          ("cusparse", ours * sp_cusparse)):
            rows.append(dict(matrix=f"m{i}", model="rn50", sparsity=s, M=64, K=256, N=3136,
                             nnz=int(64 * 256 * (1 - s)), dtype="float32", system=system,
                             median_us=t, eager_us="", compile_s="", schedule=""))
    return rows


def test_speedup_chart_plots_geomeans(tmp_path):
    rows = _results()
    got = sorted((s, round(x, 9)) for s, x, _ in viz.speedups(rows, "sparsert", "dense"))
    assert got == [(0.7, 1.5), (0.7, 2.0), (0.9, 4.0), (0.9, 9.0)]
    ax = viz.speedup_chart(rows, baselines=["dense", "cusparse"])
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    dense = lines["vs dense (geomean)"]
    np.testing.assert_allclose(dense.get_xdata(), [70, 90])
    np.testing.assert_allclose(dense.get_ydata(), [math.sqrt(3.0), 6.0])
    np.testing.assert_allclose(lines["vs cusparse (geomean)"].get_ydata(), [3.0, 5.0])
    _saved(ax, tmp_path / "speedup.png")


def test_roofline_places_points_by_intensity_and_rate(tmp_path):
    rows = _results()
    r = rows[0]                                   # 0.7 sparse, sparsert, 10 us
    inten, gflops = viz.intensity_and_rate(r)
    flops = 2 * r["nnz"] * r["N"]
    assert inten == pytest.approx(flops / (4 * (r["nnz"] + r["K"] * r["N"] + r["M"] * r["N"])))
    assert gflops == pytest.approx(flops / 10e-6 / 1e9)
    ax = viz.roofline(rows, systems=["sparsert", "dense"], peak_gflops=1000, peak_gbs=100)
    pts = ax.collections
    assert [len(c.get_offsets()) for c in pts] == [4, 4]
    roof = ax.get_lines()[0]
    x, y = roof.get_xdata(), roof.get_ydata()
    np.testing.assert_allclose(y, np.minimum(1000, 100 * x))
    _saved(ax, tmp_path / "roofline.png")


def test_read_results_parses_numbers(tmp_path):
    rows = _results()
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    back = viz.read_results(path)
    assert len(back) == len(rows)
    assert back[0]["median_us"] == 10.0 and back[0]["N"] == 3136.0
    assert back[0]["compile_s"] is None and back[0]["system"] == "sparsert"
