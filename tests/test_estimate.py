"""The measured speedup model (sparsert_triton.estimate): its table against the CSVs it cites,
interpolation and clamping in sparsity, the choice of N range, what unmeasured cases borrow,
bad arguments; and sparsify's report and ``only_if_faster`` built on it."""
import csv
import itertools
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch import nn

from dsl.schedule import MODES, ROW_BLOCK_MODES
from sparsert_triton import estimate
from sparsert_triton.estimate import DTYPES, predicted_speedup
from sparsert_triton.nn import DEFAULT_CONV_N, SparseConv2d, SparseLinear, sparsify

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _in_range(N, lo, hi):
    return lo <= N and (hi is None or N <= hi)


def test_dlmc_rows_are_the_csv_geomeans():
    """Each DLMC row is the geometric mean of t(dense) / t(sparsert_default) (dense_tf32 for
    the `tf32` rows) over the CSV's cases of its dtype, sparsity and N range."""
    path = RESULTS / "dlmc_h100.csv"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    times = defaultdict(dict)
    for r in csv.DictReader(path.open()):
        key = (r["matrix"], r["model"], float(r["sparsity"]), int(r["N"]), r["dtype"])
        times[key][r["system"]] = float(r["median_us"])
    assert estimate.DLMC_ROWS
    for kind, base, family, lo, hi, s, ratio, source in estimate.DLMC_ROWS:
        dtype, dense = ("float32", "dense_tf32") if base == "tf32" else (base, "dense")
        cases = [t[dense] / t["sparsert_default"] for (_, _, sp, N, dt), t in times.items()
                 if dt == dtype and math.isclose(sp, s) and _in_range(N, lo, hi)]
        assert cases, (base, lo, hi, s)
        assert ratio == pytest.approx(_geomean(cases), abs=0.0051), (base, lo, hi, s)
        assert source == estimate.DLMC and family == "table" and kind == "matmul"


def test_llm_rows_are_the_csv_geomeans_of_the_default_in_that_mode():
    """Each row citing the LLM benchmark is sqrt(r(11008 x 4096) * r(4096 x 11008)) of
    t(dense) / t(sparsert_default), fp16, uniform masks, at its sparsity and the top of its
    N range, and the default schedule there ran the row's mode."""
    path = RESULTS / "llm_h100.csv"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    times = defaultdict(dict)
    for r in csv.DictReader(path.open()):
        if r["dtype"] == "float16" and r["mask"] == "uniform":
            key = (r["layer"], int(r["N"]), float(r["sparsity"]))
            times[key][r["system"]] = (float(r["median_us"]), r["schedule"])
    rows = [row for row in estimate.MEASURED if row[7] == estimate.LLM]
    assert len(rows) >= 10
    for kind, base, family, lo, hi, s, ratio, _ in rows:
        ratios = []
        for layer in ("llama2-7b.mlp_up", "llama2-7b.mlp_down"):
            t = times[(layer, hi, s)]
            assert t["sparsert_default"][1].startswith(f"Schedule(mode='{family}'"), (layer, hi, s)
            ratios.append(t["dense"][0] / t["sparsert_default"][0])
        assert ratio == pytest.approx(_geomean(ratios), abs=0.0051), (family, hi, s)
        assert kind == "matmul" and base == "float16"


def test_conv_rows_are_the_csv_geomeans():
    """Each convolution row: t(cudnn) / t(sparsert) (cudnn_tf32 for `tf32`), geometric mean
    over the layers and batches whose batch x output positions fall in its N range."""
    path = RESULTS / "conv_h100.csv"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    times = defaultdict(dict)
    for r in csv.DictReader(path.open()):
        ho = (int(r["H"]) + 2 - int(r["kh"])) // int(r["stride"]) + 1     # padding 1
        wo = (int(r["W"]) + 2 - int(r["kw"])) // int(r["stride"]) + 1
        key = (r["layer"], int(r["batch"]), float(r["sparsity"]), int(r["batch"]) * ho * wo,
               r["dtype"])
        times[key][r["system"]] = float(r["median_us"])
    for kind, base, family, lo, hi, s, ratio, source in estimate.CONV_ROWS:
        dtype, dense = ("float32", "cudnn_tf32") if base == "tf32" else (base, "cudnn")
        cases = [t[dense] / t["sparsert"] for (_, _, sp, N, dt), t in times.items()
                 if dt == dtype and math.isclose(sp, s) and _in_range(N, lo, hi)]
        assert cases, (base, lo, hi, s)
        assert ratio == pytest.approx(_geomean(cases), abs=0.0051), (base, lo, hi, s)
        assert source == estimate.CONV and kind == "conv"


@pytest.fixture
def toy_table(monkeypatch):
    """One measured curve: fp32 W @ X, N 1-16, 1.0x at 80% and 2.0x at 90%."""
    rows = [("matmul", "float32", "table", 1, 16, 0.9, 2.0, "toy.csv"),
            ("matmul", "float32", "table", 1, 16, 0.8, 1.0, "toy.csv")]
    monkeypatch.setattr(estimate, "MEASURED", rows)


def _fp32(N, density):
    return predicted_speedup("matmul", 64, 64, N, density, "float32", "table")


def test_measured_levels_are_read_exactly(toy_table):
    assert _fp32(8, 0.2).ratio == 1.0 and _fp32(8, 0.1).ratio == 2.0
    assert _fp32(8, 0.1).how == "measured at 90%" and "toy.csv" in _fp32(8, 0.1).source


def test_between_levels_the_time_is_interpolated_linearly(toy_table):
    """At 85%: time 1/1 and 1/2 averaged, 1 / 0.75 = 1.33x (below the ratios' mean, 1.5x)."""
    e = _fp32(8, 0.15)
    assert e.ratio == pytest.approx(1 / (0.5 / 1.0 + 0.5 / 2.0))
    assert 1.0 < e.ratio < 1.5 and e.how == "interpolated 80%-90%"
    at = [_fp32(8, 1 - s).ratio for s in (0.8, 0.82, 0.84, 0.86, 0.88, 0.9)]
    assert at == sorted(at)


def test_below_the_lowest_level_the_time_scales_with_the_nonzeros(toy_table):
    e = _fp32(8, 0.5)
    assert e.ratio == pytest.approx(1.0 * 0.2 / 0.5)
    assert "below the lowest measured 80%" in e.how
    assert _fp32(8, 1.0).ratio == pytest.approx(0.2)      # dense mask: 5x the nonzeros


def test_above_the_highest_level_the_ratio_is_held(toy_table):
    assert _fp32(8, 0.01).ratio == 2.0 and _fp32(8, 0.0).ratio == 2.0
    assert "above the highest measured 90%" in _fp32(8, 0.01).how


def test_n_outside_every_measured_range_takes_the_nearest_capped_at_one(toy_table):
    e = _fp32(100, 0.1)
    assert e.ratio == 1.0 and "N=100 outside the measured ranges" in e.source


def test_n_picks_its_range():
    """fp32 at 90% (dlmc_h100.csv): N 1-16 1.15x, 17-256 1.48x, 257-1024 1.58x, 1025- 1.37x."""
    got = {N: _fp32(N, 0.1) for N in (1, 16, 17, 128, 256, 257, 1024, 1025, 2048, 10 ** 6)}
    assert [got[N].ratio for N in (1, 16)] == [1.15, 1.15]
    assert [got[N].ratio for N in (17, 128, 256)] == [1.48] * 3
    assert [got[N].ratio for N in (257, 1024)] == [1.58] * 2
    assert [got[N].ratio for N in (1025, 2048, 10 ** 6)] == [1.37] * 3
    assert "N 17-256" in got[128].source and "N >= 1025" in got[2048].source


def test_half_precision_at_90_percent_loses_to_dense_and_fp32_wins():
    """The figures the issue quotes: the fp16 table kernel at 90% runs below dense fp16 on
    the DLMC suite; fp32 beats dense fp32 (TF32 off) but not TF32."""
    for N in (16, 128, 2048):
        assert predicted_speedup("matmul", 512, 512, N, 0.1, "float16", "table").ratio < 1
        assert predicted_speedup("matmul", 512, 512, N, 0.1, "float32", "table").ratio > 1
    tf32 = predicted_speedup("matmul", 512, 512, 2048, 0.1, "float32", "table", dense_tf32=True)
    assert tf32.ratio < 1 and "vs dense TF32" in tf32.source
    # the blocks mode at N = 1 and 90% (the LLM benchmark on an H100): ~2.7x
    blocks = predicted_speedup("matmul", 11008, 4096, 1, 0.1, "float16", "blocks")
    assert 2.5 < blocks.ratio < 3 and blocks.source.startswith(estimate.LLM)
    # the bitmap mode: below dense at every N and density measured, and above the blocks
    # mode at 16 columns and 50%, where the default takes it
    bitmap = [predicted_speedup("matmul", 11008, 4096, N, d, "float16", "bitmap")
              for N in (1, 4, 16, 64) for d in (0.5, 0.3, 0.1)]
    assert all(e.ratio < 1 and e.source.startswith((estimate.BITMAP_SOURCE, estimate.LLM))
               for e in bitmap)
    at16 = [predicted_speedup("matmul", 11008, 4096, 16, 0.5, "float16", m).ratio
            for m in ("bitmap", "blocks")]
    assert at16[0] > at16[1]
    # the expand mode (the default from 65 half-precision columns on large weights): about
    # 0.3x at N = 128-256, 0.7x at N = 2048, measured; bf16 borrows fp16's figure, and float32
    # (TF32) the table kernel's, capped at 1.0x
    e256 = predicted_speedup("matmul", 11008, 4096, 256, 0.3, "float16", "expand")
    e2048 = predicted_speedup("matmul", 11008, 4096, 2048, 0.5, "bfloat16", "expand")
    assert 0.25 < e256.ratio < 0.4 and e256.source.startswith(estimate.LLM)
    assert 0.6 < e2048.ratio < 0.8 and "bfloat16 from float16" in e2048.source
    e32 = predicted_speedup("matmul", 11008, 4096, 256, 0.3, "float32", "expand")
    assert e32.ratio <= 1.0 and "not measured in float32" in e32.source


def test_every_kind_dtype_and_mode_gives_a_finite_positive_ratio_and_a_source():
    grid = itertools.product(estimate.KINDS, DTYPES, MODES, (False, True),
                             (1, 3, 4, 16, 64, 128, 3136, 100000), (0.0, 0.02, 0.1, 0.3, 0.5, 1.0))
    count = 0
    for kind, dtype, mode, tf32, N, density in grid:
        if kind == "conv" and mode in ROW_BLOCK_MODES:
            continue
        e = predicted_speedup(kind, 64, 576, N, density, dtype, mode, dense_tf32=tf32)
        assert math.isfinite(e.ratio) and e.ratio > 0, (kind, dtype, mode, N, density)
        assert e.source and e.how
        count += 1
    assert count == (2 * len(MODES) - len(ROW_BLOCK_MODES)) * 4 * 2 * 8 * 6


def test_sparser_is_never_predicted_slower():
    for kind, dtype, mode, tf32, N in itertools.product(
            estimate.KINDS, DTYPES, MODES, (False, True), (1, 4, 16, 64, 200, 512, 4096)):
        if kind == "conv" and mode in ROW_BLOCK_MODES:
            continue
        r = [predicted_speedup(kind, 64, 64, N, 1 - s / 100, dtype, mode, tf32).ratio
             for s in range(0, 101, 1)]
        assert all(a <= b + 1e-12 for a, b in zip(r, r[1:])), (kind, dtype, mode, tf32, N)


def test_unmeasured_cases_say_so_and_stay_conservative():
    fp32_50 = _fp32(128, 0.5)         # the DLMC suite starts at 80%
    assert fp32_50.ratio <= 1 and "below the lowest measured 80%" in fp32_50.how
    f64 = predicted_speedup("matmul", 64, 64, 128, 0.02, "float64", "table")
    assert f64.ratio <= 1 and "float64 not measured" in f64.source
    blocks32 = predicted_speedup("matmul", 64, 64, 1, 0.02, "float32", "blocks")
    assert blocks32.ratio <= 1 and "blocks mode not measured in float32" in blocks32.source
    bf = predicted_speedup("matmul", 64, 64, 128, 0.1, "bfloat16", "table")
    assert bf.ratio == predicted_speedup("matmul", 64, 64, 128, 0.1, "float16", "table").ratio
    assert "bfloat16 from float16's figures" in bf.source
    conv_bf = predicted_speedup("conv", 64, 576, 128, 0.1, "bfloat16", "table")
    assert conv_bf.ratio == 1.11 and "float16" not in conv_bf.source     # measured in bf16
    conv_95 = predicted_speedup("conv", 64, 576, 128, 0.05, "float32", "table")
    assert conv_95.ratio == 5.10 and "held" in conv_95.how        # only 90% measured


@pytest.mark.parametrize("args, match", [
    (("gemm", 4, 4, 4, 0.1, "float32", "table"), "kind must be one of"),
    (("matmul", 0, 4, 4, 0.1, "float32", "table"), "M must be a positive int"),
    (("matmul", 4, 4, 2.5, 0.1, "float32", "table"), "N must be a positive int"),
    (("matmul", 4, 4, 4, 1.5, "float32", "table"), r"density must be a number in \[0, 1\]"),
    (("matmul", 4, 4, 4, 0.1, "int8", "table"), "dtype must be one of"),
    (("matmul", 4, 4, 4, 0.1, "float32", "auto"), "mode must be a resolved mode"),
    (("conv", 4, 36, 4, 0.1, "float32", "blocks"), "blocks mode computes W @ X only"),
])
def test_bad_arguments_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        predicted_speedup(*args)


# ---------------------------------------------------------------- sparsify's report

def _pruned_linear(in_f, out_f, sparsity, seed, dtype=torch.float32):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        w = lin.weight.view(-1)
        w[w.abs().argsort()[:int(round(sparsity * w.numel()))]] = 0
    return lin.to(dtype)


def test_report_shows_the_measured_model_not_one_over_density():
    """A 90%-sparse Linear at the assumed N = 128: fp16 predicted below 1x (DLMC 0.62x), fp32
    above (1.48x); 1/density would say 10x for both."""
    for dtype, below_one in ((torch.float16, True), (torch.float32, False)):
        _, report = sparsify(_pruned_linear(256, 128, 0.9, seed=1, dtype=dtype), inplace=False)
        row = report[0]
        assert row.action == "sparse" and row.n == 128 and row.n_assumed
        assert (row.est_speedup < 1) == below_one and row.est_speedup < 2
        text = str(report)
        assert "1/density" not in text and "not measured" not in text
        assert "assumed N" in text and "128*" in text
        assert text.count("dlmc_h100.csv") == 1          # the source, listed once
        assert f"{row.est_speedup:.2f}x [1]" in text and "[1] " + row.est_source in text


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_sparse = _conv(4, 8, 0.95, seed=2)     # fp32 at 95%: 5.1x / 1.73x (TF32)
        self.conv_mid = _conv(8, 8, 0.6, seed=3)         # 60%: at most 0.43x / 0.34x
        self.fc_sparse = _pruned_linear(8 * 16, 16, 0.9, seed=4)   # N = 2: 1.15x
        self.fc_mid = _pruned_linear(16, 8, 0.6, seed=5)           # 60%: 0.35x

    def forward(self, x):
        x = torch.relu(self.conv_mid(torch.relu(self.conv_sparse(x))))
        return self.fc_mid(torch.relu(self.fc_sparse(x.flatten(1))))


def _conv(c_in, c_out, sparsity, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, stride=2 if c_in == 4 else 1)
    with torch.no_grad():
        w = conv.weight.view(-1)
        w[w.abs().argsort()[:int(round(sparsity * w.numel()))]] = 0
    return conv


@pytest.mark.usefixtures("on_test_device")
def test_only_if_faster_keeps_predicted_losers_dense_and_the_model_still_matches():
    net = TwoLayers()
    x = torch.randn(2, 4, 8, 8)
    ref = net(x)
    _, everything = sparsify(net, inplace=False, example_inputs=(x,))
    assert [r.action for r in everything] == ["sparse"] * 4        # the default: unchanged
    model, report = sparsify(net, inplace=False, example_inputs=(x,), only_if_faster=True)
    rows = {r.layer: r for r in report}
    # N from the forward pass: the convs' batch x output positions, the Linears' rows
    assert rows["conv_sparse"].n == 2 * 4 * 4 and rows["conv_mid"].n == 2 * 4 * 4
    assert rows["fc_sparse"].n == 2 and not any(r.n_assumed for r in report)
    assert isinstance(model.conv_sparse, SparseConv2d) and isinstance(model.fc_sparse,
                                                                      SparseLinear)
    assert type(model.conv_mid) is nn.Conv2d and type(model.fc_mid) is nn.Linear
    for name in ("conv_mid", "fc_mid"):
        r = rows[name]
        assert r.action == "dense" and r.est_speedup < 1
        assert r.mode == f"kept: predicted {r.est_speedup:.2f}x" and r.est_source
    for name in ("conv_sparse", "fc_sparse"):
        assert rows[name].action == "sparse" and rows[name].est_speedup > 1
    text = str(report)
    assert "kept: predicted" in text and "assumed N" not in text
    assert "2 of 4 listed layers replaced" in text
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


def test_fp32_convolutions_are_compared_with_dense_as_pytorch_runs_it():
    """cuDNN runs fp32 convolutions on TF32 unless torch.backends.cudnn.allow_tf32 is off."""
    conv = _conv(8, 8, 0.9, seed=6)
    saved = torch.backends.cudnn.allow_tf32
    try:
        got = {}
        for flag in (True, False):
            torch.backends.cudnn.allow_tf32 = flag
            got[flag] = sparsify(conv, inplace=False)[1][0]
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    assert got[True].n == DEFAULT_CONV_N and got[True].n_assumed
    assert "vs dense TF32" in got[True].est_source
    assert "vs dense fp32 (TF32 off)" in got[False].est_source
    assert got[True].est_speedup < 1 < got[False].est_speedup     # 0.81x vs 2.49x
