"""The notebooks execute top to bottom (CPU: interpreter and sm_90 compiles; GPU cells skip).

Needs nbformat, nbclient, ipykernel and matplotlib (the CI installs them).
"""
import csv
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 240


def execute(name: str):
    """Run a notebook in a fresh kernel (cwd = notebooks/, this checkout's packages first on
    its path); return (all text, image count)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(NOTEBOOKS.parent), path) if p)
    try:
        client.execute()      # raises CellExecutionError, with the cell and traceback, on error
    finally:
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif "data" in out:
                text.append(out["data"].get("text/plain", ""))
                images += "image/png" in out["data"]
    return "\n".join(text), images


def _gpu() -> bool:
    import torch
    return torch.cuda.is_available()


def test_tour():
    text, images = execute("01_tour.ipynb")
    assert "max |Y - torch|" in text and "same kernel file: True" in text
    check_listing(text)
    assert images >= 3
    assert ("skipped: timing needs a CUDA GPU" in text) != _gpu()


def check_listing(text: str):
    """The side-by-side listing of notebook 1: every load of X is annotated with its column,
    and every product (``a = x * w`` or ``a = tl.fma(x, w, a)``) with the weight it multiplies,
    ``W[row,col] = w``, whose value is the literal in the code."""
    listing = [line.split("| ", 1) for line in text.splitlines()
               if re.match(r"^(load X\[\d+, :\]|  W\[\d+,\d+\] = [+-][\d.]+)?\s*\| ", line)]
    products = loads = 0
    for left, right in listing:
        left = left.strip()
        if "tl.load(" in right:
            loads += 1
            assert left.startswith("load X["), right
        product = re.search(r"= (?:x\d+ \* |tl\.fma\(x\d+, )(-?[\d.e+-]+)", right)
        if product:
            products += 1
            m = re.fullmatch(r"W\[\d+,\d+\] = ([+-][\d.]+)", left)
            assert m, f"product not annotated: {right.strip()}"
            assert abs(float(m.group(1)) - float(product.group(1))) < 1e-4, (left, right)
    assert loads >= 5 and products >= 10
    assert any("tl.fma(" in right for _, right in listing)


def test_schedule_space():
    text, images = execute("02_schedule_space.ipynb")
    assert "same size for block_n 32 and 128: True" in text
    assert text.count("rows_per_program=") >= 9             # one compile time per (mode, R)
    assert images >= 3
    assert ("skipped: speed needs a CUDA GPU" in text) != _gpu()


def _results_csv(path: Path):
    cols = ("matrix,model,sparsity,M,K,N,nnz,dtype,system,median_us,eager_us,compile_s,"
            "schedule").split(",")
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=cols)
        out.writeheader()
        for i, s in enumerate((0.7, 0.9, 0.95)):
            nnz = int(256 * 1024 * (1 - s))
            for system, us in (("dense", 40.0), ("cusparse", 30.0), ("sparsert", 40.0 * (1 - s))):
                out.writerow(dict(matrix=f"m{i}", model="transformer", sparsity=s, M=256, K=1024,
                                  N=256, nnz=nnz, dtype="float32", system=system, median_us=us,
                                  eager_us="", compile_s="2.5" if system == "sparsert" else "",
                                  schedule=""))


def test_benchmark_results_with_a_results_file(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    _results_csv(path)
    monkeypatch.setenv("SPARSERT_RESULTS_CSV", str(path))
    text, images = execute("03_benchmark_results.ipynb")
    assert f"9 measurements from {path}" in text
    # geomean table: at 90% sparsert takes 4 us, so 30/4 vs cusparse and 40/4 vs dense
    row90 = next(line.split() for line in text.splitlines() if line.strip().startswith("90.0%"))
    assert row90 == ["90.0%", "7.50x", "10.00x"]
    assert images == 3 and "skipped" not in text


def test_benchmark_results_without_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSERT_RESULTS_CSV", str(tmp_path / "missing.csv"))
    text, images = execute("03_benchmark_results.ipynb")
    assert "no results at" in text and images == 0
