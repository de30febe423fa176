"""bench/probe_harness.py: the probes' layer cases (weights in the DLMC im2col order, the
float64 F.conv2d reference), their --only filter, rel_err and the CSV rows (CPU)."""
import csv

import pytest
import torch
import torch.nn.functional as F

from bench.probe_harness import COLUMNS, ProbeRun, probe_args, rel_err
from sparsert_triton.dlmc import write_smtx


def _dlmc(tmp_path):
    d = tmp_path / "rn50" / "magnitude_pruning" / "0.9"
    d.mkdir(parents=True)
    (tmp_path / "rn50_batchsizes.txt").write_text(
        "bottleneck_2_block_group2_1_1,784\nbottleneck_2_block_group_projection_block_group2,784\n")
    for name in ("bottleneck_2_block_group2_1_1", "bottleneck_2_block_group_projection_block_group2"):
        write_smtx(d / f"{name}.smtx", 3, 4 * 9, [0, 1, 2, 3], [0, 5, 35])
    return tmp_path


def _args(tmp_path, *more):
    return probe_args("a probe\n").parse_args(["--dlmc", str(_dlmc(tmp_path)), "--batch", "2",
                                               "--out", str(tmp_path / "p.csv"), *more])


def test_cases_carry_the_weight_input_and_reference(tmp_path):
    cases = list(ProbeRun(_args(tmp_path)).cases(device="cpu"))
    assert {c.name: c.stride for c in cases} == {
        "bottleneck_2_block_group2_1_1": 1, "bottleneck_2_block_group_projection_block_group2": 2}
    c = cases[0]
    assert c.W4.shape == (3, 4, 3, 3) and c.X.shape == (2, 4, c.H, c.H)
    # row m's nonzero k of the .smtx is (c, dy, dx) in hwc order: k = (dy*3 + dx)*C_in + c
    nz = c.W4.nonzero().tolist()
    assert nz == [[0, 0, 0, 0], [1, 1, 0, 1], [2, 3, 2, 2]]
    assert torch.equal(c.ref, F.conv2d(c.X.double(), c.W4.double(), stride=c.stride, padding=1))
    assert c.nbytes == (c.X.numel() + c.ref.numel()) * 4


def test_only_and_stride_filters(tmp_path):
    run = ProbeRun(_args(tmp_path, "--only", "projection"))
    assert [c.stride for c in run.cases(device="cpu")] == [2]
    assert list(run.cases(stride_one_only=True, device="cpu")) == []


def test_rows_go_to_the_csv(tmp_path):
    row = dict(layer="l", batch=2, system="s", median_us=1.5, rel_err="1.0e-07")
    run = ProbeRun(_args(tmp_path))
    run.emit(row)
    run.emit(dict(row, system="t"))
    assert run.rows == [row, dict(row, system="t")]
    with open(tmp_path / "p.csv") as f:                # every row so far, after each one
        got = list(csv.DictReader(f))
    assert list(got[0]) == COLUMNS and [r["system"] for r in got] == ["s", "t"]


def test_rel_err():
    ref = torch.tensor([1.0, -4.0], dtype=torch.float64)
    assert rel_err(torch.tensor([1.0, -3.0]), ref) == pytest.approx(0.25)
    assert rel_err(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) == 0.0
