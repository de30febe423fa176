"""bench/sass_stats.py reads what the generated code asks for: in an unrolled convolution
with one column per lane, one FFMA (or FMUL) per nonzero; the groups it reports are the plan's. Runs
in a subprocess without TRITON_INTERPRET (real compilation for sm_90 on the CPU)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton.backends.nvidia")

SCRIPT = r'''
import json, torch
from bench.sass_stats import COLUMNS, rows, tool, variant_stats
from dsl import Schedule
from sparsert_triton.plan import Signature
from sparsert_triton.testing import conv_kernel, masked_conv_weight
try:
    tool("nvdisasm"), tool("cuobjdump")
except FileNotFoundError as e:
    print(json.dumps({"skip": str(e)}))
    raise SystemExit(0)
g = torch.Generator().manual_seed(41)
W4 = masked_conv_weight(g, 10, 4, 3, 3, 0.3)
s = Schedule(mode="values", rows_per_program=4, block_n=32, num_warps=1, pad_input=True,
             max_functions_per_kernel=2)
stats = variant_stats(conv_kernel(W4, s), Signature("float32", "float32", "float32", ()),
                      2 * 36, (4 * 36, 36, 6, 1), (6, 6))
out = rows("layer", 2, s, stats)
print(json.dumps({"nnz": int((W4 != 0).sum()), "stats": [
    {**{k: v for k, v in st.items() if k != "ops"}, "FFMA": st["ops"].get("FFMA", 0),
     "FMUL": st["ops"].get("FMUL", 0), "LDG": st["ops"].get("LDG", 0)} for st in stats],
    "kernels": [r["kernel"] for r in out], "columns_ok": all(set(r) == set(COLUMNS) for r in out)}))
'''


def test_unrolled_conv_code_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["SPARSERT_CACHE_DIR"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in got:
        pytest.skip(got["skip"])
    stats = got["stats"]
    assert sum(st["groups"] for st in stats) == 3            # ceil(10 / 4) row groups
    assert len(stats) > 1 and all(st["groups"] >= 1 for st in stats)   # split into kernels
    # one multiply-add per nonzero and lane (a row's first one, onto zero, is an FMUL)
    assert sum(st["FFMA"] + st["FMUL"] for st in stats) == got["nnz"]
    for st in stats:
        assert st["registers"] > 0 and st["spill_bytes"] == 0
        assert st["LDG"] > 0 and st["code_bytes"] == 16 * st["instructions"]
    assert got["kernels"] == list(range(len(stats))) and got["columns_ok"]
