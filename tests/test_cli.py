"""The ``sparsert`` command line: inspect, emit, bench/tune guards, cache, and bad input."""
import ast
import gzip
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from sparsert_triton.cli import main, text_histogram

DATA = "data/bottleneck_2_block_group1_1_1.smtx.gz"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def run(capsys, *argv):
    """(exit status, stdout, stderr) of main(argv); argparse exits become statuses."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err):
    assert rc == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("sparsert") and "Traceback" not in err
    return err


def histogram_total(out):
    return sum(int(line.rsplit(None, 1)[-1]) for line in out.splitlines() if " | " in line)


# ------------------------------------------------------------------ inspect

def test_inspect_bundled_dlmc_matrix(capsys, tmp_path):
    png = tmp_path / "mask.png"
    rc, out, err = run(capsys, "inspect", DATA, "--plot", str(png))
    assert rc == 0, err
    assert re.search(r"shape\s+64 x 576", out)
    assert re.search(r"nnz\s+3686\b", out)
    assert "sparsity 90.00%" in out
    assert histogram_total(out) == 64                # every row lands in one bin
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the default plan of a matrix product names no convolution-only field
    default = next(line for line in out.splitlines() if line.startswith("default"))
    assert "mode='table'" in default
    from dsl.schedule import CONV_FIELDS
    assert not any(f in default for f in CONV_FIELDS), default
    # ... and so does emit's summary
    rc, out, err = run(capsys, "emit", DATA, "-o", str(tmp_path / "k.py"))
    assert rc == 0 and "mode=" in err and not any(f in err for f in CONV_FIELDS), err


def test_inspect_npy_dense_and_bool(capsys, tmp_path):
    a = np.zeros((6, 10), np.float32)
    a[0, :4] = 1.5
    a[3, 2] = -2.0
    np.save(tmp_path / "w.npy", a)
    np.save(tmp_path / "m.npy", a != 0)
    for name in ("w.npy", "m.npy"):
        rc, out, err = run(capsys, "inspect", str(tmp_path / name))
        assert rc == 0, err
        assert re.search(r"shape\s+6 x 10", out) and re.search(r"nnz\s+5\b", out)
        assert re.search(r"empty\s+4 rows, 6 columns", out)
        assert histogram_total(out) == 6


def test_inspect_state_dict_layers(capsys, tmp_path):
    conv = torch.randn(8, 3, 3, 3) * (torch.rand(8, 3, 3, 3) < 0.5)
    fc = torch.randn(5, 7)
    torch.save({"conv1.weight": conv, "conv1.bias": torch.randn(8), "fc.weight": fc},
               tmp_path / "model.pt")
    path = str(tmp_path / "model.pt")
    rc, out, err = run(capsys, "inspect", path, "--layer", "conv1")   # '.weight' implied
    assert rc == 0, err
    assert re.search(r"shape\s+8 x 27", out)
    assert re.search(rf"nnz\s+{int((conv != 0).sum())}\b", out)
    assert "flattened" in out
    rc, out, err = run(capsys, "inspect", path, "--layer", "fc.weight")
    assert rc == 0 and re.search(r"shape\s+5 x 7", out)
    err = one_line_error(*run(capsys, "inspect", path, "--layer", "nope")[::2])
    assert "no layer 'nope'" in err and "conv1.weight" in err
    err = one_line_error(*run(capsys, "inspect", path)[::2])
    assert "--layer" in err
    torch.save(fc, tmp_path / "t.pt")                                # a bare tensor
    rc, out, err = run(capsys, "inspect", str(tmp_path / "t.pt"))
    assert rc == 0 and re.search(r"nnz\s+35\b", out)


def test_inspect_directory_lists_each_matrix(capsys, tmp_path):
    np.save(tmp_path / "a.npy", np.eye(4, dtype=np.float32))
    (tmp_path / "sub").mkdir()
    with gzip.open(tmp_path / "sub" / "b.smtx.gz", "wt") as f:
        f.write("2, 3, 2\n0 1 2\n2 0\n")
    rc, out, err = run(capsys, "inspect", str(tmp_path))
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("a.npy") and lines[2].startswith("sub/b.smtx.gz")


def test_text_histogram_bins_cover_all_values():
    vals = [0, 0, 1, 5, 9, 9, 9, 23]
    lines = text_histogram(vals, bins=4)
    assert len(lines) <= 4 and sum(int(l.rsplit(None, 1)[-1]) for l in lines) == len(vals)
    single = text_histogram([3, 3, 3])
    assert len(single) == 1 and single[0].split()[0] == "3" and single[0].endswith(" 3")


# ------------------------------------------------------------------ emit

def _small_npy(tmp_path):
    a = np.zeros((8, 12), np.float32)
    a[0, [1, 5]] = [1.25, -0.75]
    a[3, 0] = 2.5
    a[7, 11] = 0.375
    path = tmp_path / "small.npy"
    np.save(path, a)
    return str(path)


@pytest.mark.parametrize("mode,kernel", [("values", "def sparse_kernel_0("),
                                         ("indices", "def sparse_kernel_0("),
                                         ("table", "def sparse_table_kernel(")])
def test_emit_writes_a_parseable_kernel(capsys, tmp_path, mode, kernel):
    src = _small_npy(tmp_path)
    out_file = tmp_path / f"{mode}.py"
    rc, out, err = run(capsys, "emit", src, "--mode", mode, "--rows-per-program", "4",
                       "--block-n", "32", "--epilogue", "bias_relu", "-o", str(out_file))
    assert rc == 0, err
    text = out_file.read_text()
    ast.parse(text)
    assert kernel in text
    assert f"mode='{mode}', rows_per_program=4, block_n=32" in text
    assert "relu((W @ X + bias))" in text
    assert "max_statements_per_function" not in text     # the library's default bounds apply
    # values mode bakes the weights into the code; the other modes read them from buffers
    assert ("1.25" in text) == (mode == "values")
    assert "wrote" in err


def test_emit_table_loop_is_prefetched(capsys):
    rc, out, err = run(capsys, "emit", DATA, "--mode", "table", "--prefetch-x", "off")
    assert rc == 0, err
    ast.parse(out)
    derived = next(line for line in out.splitlines() if line.startswith("# derived :"))
    assert "c_next0 = " in out and "prefetch=True" in derived


def test_emit_to_stdout_for_a_dlmc_pattern(capsys):
    rc, out, err = run(capsys, "emit", DATA, "--mode", "table", "--block-n", "64")
    assert rc == 0, err
    ast.parse(out)
    assert "weight: 64x576, nnz 3686" in out and "def sparse_table_kernel(" in out


# ------------------------------------------------------------------ bad input

def test_bad_inputs_give_one_line(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.smtx").write_text("not a header\n")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    small = _small_npy(tmp_path)
    cases = [
        (("inspect", str(tmp_path / "missing.smtx")), "no such file"),
        (("inspect", str(tmp_path / "notes.txt")), "unknown format"),
        (("inspect", str(tmp_path / "bad.smtx")), "not a valid .smtx"),
        (("inspect", str(tmp_path / "cube.npy")), "expected a 2-D matrix"),
        (("inspect", str(tmp_path / "junk.pt")), "cannot load"),
        (("inspect", small, "--layer", "fc"), "--layer applies to .pt"),
        (("emit", small, "--block-n", "3"), "block_n must be a power of two"),
        (("emit", small, "--rows-per-program", "zero"), "--rows-per-program"),
        (("emit", small, "--mode", "dense"), "--mode"),
        (("emit", small, "--max-statements", "auto"), "--max-statements"),
        (("emit", small, "-o", str(tmp_path / "no" / "dir" / "k.py")), "cannot write"),
        (("cache", "purge"), "invalid choice"),
        ((), "required"),
    ]
    for argv, words in cases:
        rc, out, err = run(capsys, *argv)
        assert words in one_line_error(rc, err), (argv, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("command", ["bench", "tune"])
def test_gpu_commands_refuse_without_cuda(capsys, command):
    err = one_line_error(*run(capsys, command, DATA)[::2])
    assert f"{command} needs a CUDA GPU" in err


# ------------------------------------------------------------------ cache

def test_cache_list_and_clear(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    small = _small_npy(tmp_path)
    rc, out, _ = run(capsys, "cache", "list")
    assert rc == 0 and out.strip().endswith(str(tmp_path / "cache")) and out.startswith("0 entries")
    for mode in ("values", "table"):
        assert run(capsys, "emit", small, "--mode", mode, "-o", str(tmp_path / "k.py"))[0] == 0
    rc, out, _ = run(capsys, "cache", "list")
    assert rc == 0 and "2 entries" in out
    assert sum(1 for line in out.splitlines() if "program : W @ X" in line) == 2
    rc, out, _ = run(capsys, "cache", "clear")
    assert rc == 0 and out.startswith("removed")
    assert run(capsys, "cache", "list")[1].startswith("0 entries")


# ------------------------------------------------------------------ as a program

def test_module_entry_point_help_and_error():
    env = dict(os.environ)
    help_ = subprocess.run([sys.executable, "-m", "sparsert_triton", "--help"], cwd=ROOT,
                           capture_output=True, text=True, env=env, timeout=120)
    assert help_.returncode == 0
    for cmd in ("inspect", "emit", "bench", "tune", "cache"):
        assert cmd in help_.stdout
    bad = subprocess.run([sys.executable, "-m", "sparsert_triton", "inspect", "missing.smtx"],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.gpu
def test_bench_on_gpu(capsys):
    rc, out, err = run(capsys, "bench", DATA, "--n", "64", "--rep-ms", "20", "--mode", "table")
    assert rc == 0, err
    for system in ("sparsert", "dense", "dense_tf32", "cusparse"):
        assert re.search(rf"^{system}\s+\d+\.\d+\s+\d+\.\d+", out, re.M), out


@pytest.mark.gpu
def test_tune_on_gpu_then_cached(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(tmp_path / "cache"))
    argv = ("tune", DATA, "--n", "64", "--budget-s", "20", "--max-compile-s", "3")
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    best = re.search(r"^best\s+(Schedule\(.*\))$", out, re.M)
    assert best and re.search(r"^ok\s", out, re.M), out
    rc, out2, err = run(capsys, *argv)                      # the stored plan comes back
    assert rc == 0 and "1 cached" in out2 and best.group(1) in out2


def test_split_k_option_changes_the_kernel(capsys):
    rc, out, err = run(capsys, "emit", DATA, "--mode", "table", "--split-k", "4")
    assert rc == 0, err
    assert "split_k=4" in out and "acc = tl.sum(acc, axis=0)" in out
    rc, out, err = run(capsys, "emit", DATA, "--mode", "table", "--split-k", "0")
    assert rc != 0 and "positive integer" in err


def test_prefetch_tail_option_changes_the_kernel(capsys):
    rc, on, err = run(capsys, "emit", DATA, "--mode", "table", "--prefetch-tail", "on",
                      "--prefetch-x", "off")
    assert rc == 0, err
    rc, off, err = run(capsys, "emit", DATA, "--mode", "table", "--prefetch-tail", "off")
    assert rc == 0, err
    assert "valid = " in on and "for k in range(full, end):" not in on
    assert "valid = " not in off and "for k in range(full, end):" in off


def test_streams_option_reaches_the_schedule(capsys):
    from sparsert_triton.cli import build_parser, schedule_from_args
    args = build_parser().parse_args(["emit", str(DATA), "--mode", "values", "--streams", "3"])
    assert schedule_from_args(args).streams == 3
    args = build_parser().parse_args(["emit", str(DATA)])
    assert schedule_from_args(args).streams == "auto"
    # a launch-only field: the generated source is the same for every value
    rc, three, err = run(capsys, "emit", DATA, "--mode", "values", "--streams", "3")
    assert rc == 0, err
    rc, one, err = run(capsys, "emit", DATA, "--mode", "values", "--streams", "1")
    assert rc == 0 and one == three
    rc, out, err = run(capsys, "emit", DATA, "--mode", "values", "--streams", "0")
    assert rc != 0 and "positive integer" in err


def test_split_and_switch_options_reach_the_schedule(capsys):
    from sparsert_triton.cli import build_parser, schedule_from_args
    args = build_parser().parse_args(["emit", str(DATA), "--mode", "table", "--split-k", "2"])
    s = schedule_from_args(args)
    assert s.split_k == 2
    args = build_parser().parse_args(["emit", str(DATA), "--conv-input", "masked",
                                      "--prefetch-x", "on"])
    s = schedule_from_args(args)
    assert s.conv_input == "masked" and s.prefetch_x is True
    with pytest.raises(SystemExit):      # the two switches it replaced are gone
        build_parser().parse_args(["emit", str(DATA), "--pad-input", "on"])
    rc, out, err = run(capsys, "emit", DATA, "--mode", "table", "--prefetch-tail", "on",
                       "--prefetch-x", "on")
    assert rc == 0, err
    assert "full2 = " in out and "xb0 = " in out         # two chunks per step, X ahead
    rc, out, err = run(capsys, "emit", DATA, "--mode", "blocks", "--split-k", "2")
    assert rc == 0, err
    assert "atomic_add(CNT" in out          # K slices and the last one's sum
    # the unrolled modes' column slices were removed: refused by name
    rc, out, err = run(capsys, "emit", DATA, "--mode", "values", "--split-k", "2")
    assert rc != 0 and "split_k applies to" in err
    # the plan sets these: no flags for them
    for flag in ("--pdl", "--num-stages", "--bake-strides", "--prefetch", "--tap-segments",
                 "--pack-nonzeros", "--tap-pointers"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["emit", str(DATA), flag, "on"])
