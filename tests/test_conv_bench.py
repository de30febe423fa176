"""The convolution benchmark's layer table and its im2col path (CPU interpreter)."""
import os

import torch

from bench.conv_bench import layers
from dsl import Schedule, conv2d
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.conv import conv_weight
from sparsert_triton.dlmc import write_smtx

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _dlmc(tmp_path):
    d = tmp_path / "rn50" / "magnitude_pruning" / "0.9"
    d.mkdir(parents=True)
    (tmp_path / "rn50_batchsizes.txt").write_text(
        "bottleneck_2_block_group2_1_1,784\nbottleneck_2_block_group_projection_block_group2,784\n"
        "bottleneck_2_block_group_projection_block_group1,3136\n")
    for name, C in (("bottleneck_2_block_group2_1_1", 4), ("bottleneck_2_block_group_projection_block_group2", 4),
                    ("bottleneck_2_block_group_projection_block_group1", 2)):
        write_smtx(d / f"{name}.smtx", 3, C * 9, [0, 1, 2, 3], [0, 5, C * 9 - 1])
    return tmp_path


def test_layer_table(tmp_path):
    rows = {name: (C_in, C_out, H, stride) for name, _, C_in, C_out, H, stride
            in layers(_dlmc(tmp_path), "0.9")}
    assert rows["bottleneck_2_block_group2_1_1"] == (4, 3, 28, 1)
    assert rows["bottleneck_2_block_group_projection_block_group2"] == (4, 3, 56, 2)
    assert rows["bottleneck_2_block_group_projection_block_group1"] == (2, 3, 56, 1)


def test_im2col_path_matches_direct_convolution():
    """unfold (PyTorch's chw order) times the hwc matrix converted to chw == direct conv."""
    g = torch.Generator().manual_seed(0)
    C_in, C_out = 3, 5
    dense_hwc = torch.randn(C_out, 9 * C_in, generator=g) * (torch.rand(C_out, 9 * C_in, generator=g) < 0.3)
    w, _ = conv_weight(dense_hwc, (C_in, 3, 3), order="hwc")
    X = torch.randn(2, C_in, 7, 7, generator=g).to(DEV)
    direct = sparse_kernel(lambda W, X: conv2d(W, X, stride=2, padding=1),
                           schedule=Schedule(mode="table")).specialize(
        dense_hwc, kernel_size=(C_in, 3, 3), order="hwc")(X)
    mm = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="table")).specialize(w)
    cols = torch.nn.functional.unfold(X, 3, padding=1, stride=2)
    via = torch.stack([mm(cols[b]) for b in range(2)]).reshape(direct.shape)
    torch.testing.assert_close(direct, via, rtol=1e-5, atol=1e-5)
    # and both equal F.conv2d with the weight rearranged from (dy, dx, c_in) to (c_in, dy, dx)
    W4 = dense_hwc.reshape(C_out, 3, 3, C_in).permute(0, 3, 1, 2)
    ref = torch.nn.functional.conv2d(X.cpu().double(), W4.double(), None, 2, 1)
    torch.testing.assert_close(direct.cpu().double(), ref, rtol=1e-5, atol=1e-5)


def test_run_case_checks_every_system(tmp_path):
    """The benchmark's whole path for one small layer (CPU interpreter, a fake timer): every
    system passes its correctness check and gets a row."""
    import csv
    import io
    from bench.conv_bench import COLUMNS, run_case
    from sparsert_triton.dlmc import read_smtx
    p = read_smtx(next((_dlmc(tmp_path) / "rn50" / "magnitude_pruning" / "0.9").glob("*group2_1_1*")))
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS)
    from bench.conv_bench import SCHEDULES
    log = []
    picked = [SCHEDULES[0], next(s for s in SCHEDULES if s.mode == "values"),
              next(s for s in SCHEDULES if s.split_k > 1)]
    times = run_case("layer", p, 4, 3, 6, 2, 2, "float32", "0.9", 10.0, writer, device=DEV,
                     timer=lambda make_call, X, nbytes: 1.0, log=log, schedules=picked)
    assert [e["schedule"] for e in log] == [repr(s) for s in picked]
    assert all(e["median_us"] == 1.0 and "error" not in e for e in log), log
    rows = list(csv.DictReader(io.StringIO("," .join(COLUMNS) + "\n" + out.getvalue())))
    systems = {r["system"]: r for r in rows}
    assert set(systems) == {"cudnn", "cudnn_tf32", "sparsert", "im2col_sparsert"}
    assert all(r["median_us"] == "1.00" for r in rows), rows
    assert set(times) == set(systems)
    # the same case with X in NHWC memory order: every system still passes its check
    out2 = io.StringIO()
    times = run_case("layer", p, 4, 3, 6, 2, 2, "float32", "0.9", 10.0, csv.DictWriter(out2, COLUMNS),
                     device=DEV, timer=lambda make_call, X, nbytes: 1.0, schedules=picked[:1],
                     channels_last=True)
    assert set(times) == set(systems)


def test_schedules_option_parses_dsl_reprs():
    import pytest
    from bench.conv_bench import SCHEDULES, parse_schedules
    text = "; ".join(repr(s) for s in SCHEDULES[:3])
    assert [repr(s) for s in parse_schedules(text)] == [repr(s) for s in SCHEDULES[:3]]
    with pytest.raises(ValueError, match="not a Schedule"):
        parse_schedules("Schedule(); 3")
    # an earlier result's repr, with the input's two switches: read as conv_input
    old = "Schedule(mode='table', block_n=64, chunk=8, pad_input=False, tap_masks=True)"
    assert parse_schedules(old)[0].conv_input == "masked"


def test_cudnn_flags_are_restored():
    from bench.conv_bench import cudnn_flags
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    with cudnn_flags(allow_tf32=not before[0], benchmark=not before[1]):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) == \
            (not before[0], not before[1])
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) == before


def test_build_all_then_run_case_reports_the_parallel_build(tmp_path):
    """``--jobs``: the unrolled schedules of every layer are built in worker processes first
    (table schedules are not), and the timing run reports those build times."""
    import csv
    import io
    from bench.conv_bench import COLUMNS, _paths, build_all, run_case
    root = _dlmc(tmp_path)
    cases = [(path, name, C_in, H, stride, p.nnz) for path, (name, p, C_in, _, H, stride)
             in zip(_paths(root, "0.9"), layers(root, "0.9"))][:2]
    scheds = [Schedule(mode="values", rows_per_program=2, block_n=32),
              Schedule(mode="table")]
    built = build_all(cases, scheds, "float32", 2, 10.0, device=DEV)
    assert set(built) == {(name, repr(scheds[0])) for _, name, *_ in cases}
    assert all(sec >= 0 for sec in built.values())
    path, name, C_in, H, stride, _ = cases[0]
    from sparsert_triton.dlmc import read_smtx
    log = []
    run_case(name, read_smtx(path), C_in, 3, H, stride, 1, "float32", "0.9", 10.0,
             csv.DictWriter(io.StringIO(), COLUMNS), device=DEV,
             timer=lambda make_call, X, nbytes: 1.0, log=log, schedules=scheds, prebuilt=built)
    assert [e["build_s"] for e in log][0] == built[(name, repr(scheds[0]))]
    assert "error" not in log[0] and "error" not in log[1], log


def test_build_one_runs_the_kernel_at_every_timed_batch(tmp_path, monkeypatch):
    """A build runs the kernel once per batch size the timing run will use (a batch whose
    N = batch * H * W differs in divisibility by 16 is a second Triton specialisation)."""
    import bench.conv_bench as cb
    root = _dlmc(tmp_path)
    path = cb._paths(root, "0.9")[0]
    name, p, C_in, _, H, stride = next(layers(root, "0.9"))
    seen = []
    real = cb.layer_kernel

    def recording(*args, **kw):
        k = real(*args, **kw)
        return lambda X: (seen.append(X.shape[0]), k(X))[1]
    monkeypatch.setattr(cb, "layer_kernel", recording)
    s = Schedule(mode="values", rows_per_program=2, block_n=32)
    out = cb._build_one(str(path), name, C_in, H, stride, "float32", repr(s), DEV, (1, 3))
    assert seen == [1, 3] and out[:2] == (name, repr(s)) and out[2] >= 0


def test_build_jobs_are_capped_by_cores_over_compile_workers():
    from bench.conv_bench import capped_jobs
    assert capped_jobs(12, 2, 16) == 8 and capped_jobs(12, 4, 16) == 4
    assert capped_jobs(3, 4, 16) == 3 and capped_jobs(8, 0, 16) == 8     # workers off: 1 each
    assert capped_jobs(6, 4, 2) == 1                                      # never below one


def test_write_rows_makes_the_folder_and_writes_header_then_rows(tmp_path):
    import csv
    from bench.report import write_rows
    path = tmp_path / "new" / "rows.csv"
    write_rows(path, ["a", "b"], [{"a": 1, "b": 2.5}, {"a": 3, "b": ""}])
    assert list(csv.DictReader(open(path))) == [{"a": "1", "b": "2.5"}, {"a": "3", "b": ""}]


def test_the_compile_budget_resolves_auto_modes_as_the_kernel_does():
    """An all-'auto' schedule is unrolled only for small weights (<= 2048 nonzeros), so the
    bench's compile budget skips it only there (it was read as unrolled for every weight, and
    the default schedule went untimed on the larger layers)."""
    from bench.conv_bench import _over_budget
    from dsl import Schedule
    assert not _over_budget(Schedule(), 50_000, 8.0)                 # resolves to table
    assert _over_budget(Schedule(mode="values"), 50_000, 8.0)
    assert not _over_budget(Schedule(), 2048, 8.0)                   # unrolled, ~4 s
    assert _over_budget(Schedule(), 2048, 1.0)
    assert not _over_budget(Schedule(mode="table"), 10 ** 6, 1.0)
