"""First contact: the demo says what the matrix is and that its values are random draws, shows
the plan in a few lines and an excerpt of the kernel with its size; `k.summary()`."""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from dsl import Schedule, relu
from sparsert_triton import sparse_kernel
from sparsert_triton.demo import BUNDLED, about, excerpt, main
from sparsert_triton.dlmc import write_smtx

ROOT = Path(__file__).resolve().parent.parent


def test_demo_output(capsys):
    assert main(["--n", "8", "--lines", "12"]) == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())                               # the prose is wrapped
    assert "ResNet-50's first 3x3 convolution" in words and "magnitude-pruned to 90%" in words
    assert "the 3686 nonzero values are random draws from N(0, 1)" in words
    plan = next(line for line in out.splitlines() if line.startswith("plan "))
    assert "mode='values'" in plan and len(plan) < 120          # readable, not the whole plan
    head = re.search(r"--- generated Triton source: (\d+) lines, (\d+) KiB; the first 12 lines "
                     r"of its first function ---\n(.*?)\n--- \(", out, re.S)
    lines, shown = int(head.group(1)), head.group(3).splitlines()
    assert lines > 1000 and len(shown) == 12
    assert shown[0].startswith("@triton.jit") and shown[1].startswith("def _g0")
    assert "tl.load" in head.group(3) and len(out.splitlines()) < 40
    assert "max abs error" in out and "OK" in out


def test_demo_starts_the_interpreter_itself(tmp_path):
    """`python -m sparsert_triton.demo` imports triton (with the package) before the demo can
    turn the interpreter on: without a GPU it must still run every mode (table mode raised
    'Cannot call @triton.jit'd outside of the scope of a kernel'), and without the test
    extras (scripts/setup.sh installs them only for scripts/test.sh)."""
    if torch.cuda.is_available():
        return
    small = tmp_path / "small.smtx"
    write_smtx(small, 4, 6, [0, 2, 2, 3, 5], [0, 3, 5, 1, 2])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    blocked = tmp_path / "no_test_extras"          # a fresh install has no test extras
    blocked.mkdir()
    for name in ("hypothesis", "pytest", "matplotlib", "nbclient"):
        (blocked / f"{name}.py").write_text("raise ImportError('a test extra')\n")
    env["PYTHONPATH"] = str(blocked)
    r = subprocess.run([sys.executable, "-m", "sparsert_triton.demo", str(small), "--mode",
                        "table", "--n", "4", "--lines", "3"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mode='table'" in r.stdout and "OK" in r.stdout


def test_about_names_layers_from_the_dlmc_layout(tmp_path):
    f = tmp_path / "rn50" / "magnitude_pruning" / "0.98" / "bottleneck_1_block_group2_1_1.smtx.gz"
    assert about(f) == ("the mask of layer bottleneck_1_block_group2_1_1 (a 1x1 convolution of "
                        "ResNet-50), pruned to 98% (magnitude pruning)")
    assert about(tmp_path / "w.smtx") == "the mask of layer w"
    assert "3x3" in about(BUNDLED)


def test_summary_is_a_few_lines_about_the_kernel():
    W = torch.zeros(8, 16)
    W[0, 1], W[3, 5], W[3, 7] = 1.0, 2.0, 3.0

    @sparse_kernel(schedule=Schedule(mode="values", rows_per_program=4, block_n=16))
    def fc(W, X, bias):
        return relu(W @ X + bias)

    k = fc.specialize(W)
    lines = k.summary().splitlines()
    assert [line.split()[0] for line in lines] == ["program", "weight", "plan", "source"]
    assert lines[0] == "program  fc: relu((W @ X + bias))"
    assert lines[1].startswith("weight   8 x 16, nnz 3 (97.7% sparse), float32")
    assert "mode='values': 4 row(s) x 16 columns per program" in lines[2]
    assert lines[3].startswith(f"source   {len(k.source.splitlines())} lines, 1 kernel(s)")
    k(torch.randn(16, 5), torch.randn(8))               # after a call: that call's plan
    assert "mode='values': 4 row(s)" in k.summary().splitlines()[2]


def test_excerpt_starts_at_the_product():
    src = "import triton\n@triton.jit\ndef _epilogue(a):\n    return a\n@triton.jit\ndef sparse_k(X):\n    x = 1\n"
    assert excerpt(src, 2) == "@triton.jit\ndef sparse_k(X):"
