"""Compiled code (sm_90, on the CPU) of kernels that the interpreter runs correctly but a GPU
did not: float64 kernels computing in float32, and a build that did not finish.

Runs in a subprocess without TRITON_INTERPRET (the interpreter patches triton.language).
``bash scripts/compat_triton36.sh`` runs it with triton 3.6, the GPU machine's version.
"""

import pytest

pytest.importorskip("triton.backends.nvidia")

SCRIPT = r'''
import inspect, json, re, time
import torch
from dsl import Schedule, clamp, relu, silu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.compile import _import_compilable, precompile_variant
from sparsert_triton.compiler.plan import Signature

out = {}

def clamped_scaled(W, X, s):
    return -(-clamp(W @ X, -2.015, 0.027)) * s

# float64: clamp bounds and number operands (triton 3.6 made both float32)
f64 = {}
g = torch.Generator().manual_seed(1)
W = torch.randn(28, 18, generator=g, dtype=torch.float64) * (torch.rand(28, 18, generator=g) < 0.2)
sig = Signature("float64", "float64", "float64", (("s", "number"),))
for name, s in (("values", Schedule(mode="values")),
                ("table", Schedule(mode="table")),
                ("table_rows", Schedule(mode="table", rows_per_program=16, block_n=2, chunk=16)),
                ("table_wide", Schedule(mode="table", chunk=32, block_n=4))):
    v = sparse_kernel(clamped_scaled, schedule=s).specialize(W).variant(sig, 82,
                                                                       torch.device("cpu"))
    ttir = "".join(c.asm["ttir"] for c in precompile_variant(v, sig))
    mod = _import_compilable(v.path, v.key)
    fn = getattr(mod, v.kernels[0][0].fn.__name__ if hasattr(v.kernels[0][0], "fn")
                 else v.kernels[0][0].__name__)
    # float32 types in the code, not in names holding a hex digest that may contain "f32":
    # #loc lines, loc("...") strings (a cache path) and @symbols (the generated module's
    # name, a hash) are left out
    code = [re.sub(r"@[\w.$-]+", "@", re.sub(r'loc\("[^"]*"[^)]*\)', "", l))
            for l in ttir.splitlines() if not l.startswith("#loc")]
    f64[name] = {"f32": [l.strip()[:160] for l in code if "f32" in l],
                 "annotation": str(inspect.signature(fn.fn).parameters["op_s"].annotation)}
out["f64"] = f64

# fp16 X, bf16 weight, 32 rows per program of the one-row table kernel (chunks of 16,
# prefetched): N = 1, then N = 42 with a transposed X (a GPU build that did not finish)
def relu_silu(W, X):
    return relu(silu(W @ X) - 1.482)

W = torch.randn(3, 9, generator=g).to(torch.bfloat16)
sig = Signature("float16", "bfloat16", "float16", ())
rows = {}
for R in (1, 32):
    k = sparse_kernel(relu_silu, schedule=Schedule(
        mode="table", rows_per_program=R, chunk=16, block_n=32, use_dot=False,
        row_order="given")).specialize(W)
    for N, strides, ones in ((1, (1, 1), ("N", "sxk", "sxn", "sym", "syn")),
                             (42, (1, 9), ("sxk", "syn"))):
        v = k.variant(sig, N, torch.device("cpu"), strides)
        t = time.time()
        c = precompile_variant(v, sig, constants={p: 1 for p in ones})[0]
        rows[f"{R}_{N}"] = {"seconds": time.time() - t, "loads": c.asm["ttir"].count("tt.load")}
out["rows"] = rows

# bfloat16 tensor cores: refused only where kernels run in the interpreter, not when a
# variant is built on the CPU to read or compile its source
W = torch.randn(32, 32, generator=g).to(torch.bfloat16)
k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(
    mode="table", use_dot=True, rows_per_program=16, chunk=16, block_n=16)).specialize(W)
sig = Signature("bfloat16", "bfloat16", "bfloat16", ())
v = k.variant(sig, 64, torch.device("cpu"))
out["bf16_dot_ptx"] = "".join(c.asm["ptx"] for c in precompile_variant(v, sig))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled(run_aot_script):
    return run_aot_script(SCRIPT, timeout=600)


@pytest.mark.parametrize("name", ["values", "table", "table_rows", "table_wide"])
def test_float64_kernels_hold_no_float32(compiled, name):
    """A float64 kernel's compiled code has no float32 value: clamp bounds are float64
    constants (triton 3.6's tl.maximum made a Python float an fp32 tensor, so the clamp was
    at fp32(-2.015)) and a number operand is an fp64 parameter (Triton passes a Python
    float as fp32 unless the parameter is annotated)."""
    c = compiled["f64"][name]
    assert c["f32"] == []
    assert c["annotation"] == "fp64"


def test_many_rows_per_program_compile_in_seconds(compiled):
    """The one-row table kernel with 32 rows per program compiles to one copy of the row's
    loop, as with one row: it used to unroll all 32 (``tl.static_range``), about 100 s per
    compile on the CPU for sm_90, so a GPU call at N = 1 and then N = 42 ran past 180 s."""
    c = compiled["rows"]
    for N in (1, 42):
        assert c[f"32_{N}"]["loads"] == c[f"1_{N}"]["loads"] > 0
        assert c[f"32_{N}"]["seconds"] < 60


def test_bfloat16_dot_compiles_outside_the_interpreter(compiled):
    assert "mma" in compiled["bf16_dot_ptx"]
