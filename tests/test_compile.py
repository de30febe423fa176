"""Real Triton compilation for sm_90 on the CPU (the interpreter does not check this).

Runs in a subprocess without TRITON_INTERPRET: the interpreter patches triton.language.
"""
import re

import pytest
import torch

pytest.importorskip("triton.backends.nvidia")

SCRIPT = r'''
import json, re, sys
import torch
from dsl import Schedule, gelu, relu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.compile import precompile_variant

def bias_relu(W, X, b):
    return relu(W @ X + b)

def gelu_cast(W, X):
    return gelu(W @ X).to("bfloat16")

CASES = {
    "values_fp32_split": ("values", torch.float32, bias_relu,
                          dict(rows_per_program=8, max_statements_per_function=32)),
    "indices_fp16": ("indices", torch.float16, gelu_cast, dict(rows_per_program=4)),
    "table_bf16": ("table", torch.bfloat16, bias_relu, dict(rows_per_program=4, chunk=8)),
    "table_dot_fp16": ("table", torch.float16, gelu_cast,
                       dict(rows_per_program=16, chunk=16, use_dot=True)),
    "table_prefetch_tail": ("table", torch.float32, bias_relu,
                            dict(chunk=4, num_warps=1, prefetch_tail=True)),
    "values_fp64": ("values", torch.float64, bias_relu, dict(rows_per_program=2)),
}
out = {}
for name, (mode, dtype, fn, sched) in CASES.items():
    g = torch.Generator().manual_seed(0)
    # drawn in float64: the float64 case's weights are not float32 numbers
    W = (torch.randn(24, 40, generator=g, dtype=torch.float64)
         * (torch.rand(24, 40, generator=g) < 0.2)).to(dtype)
    k = sparse_kernel(fn, schedule=Schedule(mode=mode, **sched)).specialize(W)
    X = torch.randn(40, 100).to(dtype)
    ops = [torch.randn(24).to(dtype)] if k.program.operands else []
    from sparsert_triton.compiler.plan import Signature
    from sparsert_triton.compiler.canonicalise import output_dtype
    xd = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
          torch.float64: "float64"}[dtype]
    sig = Signature(xd, xd, output_dtype(k.program, xd), tuple((n, "row") for n in k.program.operands))
    v = k.variant(sig, 100, torch.device("cpu"))
    compiled = precompile_variant(v, sig)
    out[name] = {"kernels": len(v.kernels), "compiled": len(compiled),
                 "ptx": [c.asm["ptx"] for c in compiled], "source": v.source}
    if name == "values_fp32_split":
        full = precompile_variant(v, sig, fast=False)
        out[name]["ptx_full"] = [c.asm["ptx"] for c in full]
# N == 1: Triton's launch compiles an integer argument equal to 1 as a constant
ones = {}
for name in ("values_fp32_split", "table_bf16", "table_prefetch_tail"):
    mode, dtype, fn, sched = CASES[name]
    W = (torch.randn(24, 40, dtype=torch.float64) * (torch.rand(24, 40) < 0.2)).to(dtype)
    k = sparse_kernel(fn, schedule=Schedule(mode=mode, **sched)).specialize(W)
    xd = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    sig = Signature(xd, xd, output_dtype(k.program, xd), tuple((n, "row") for n in k.program.operands))
    v = k.variant(sig, 1, torch.device("cpu"))
    try:
        ones[name] = len(precompile_variant(v, sig, constants={"N": 1}))
    except Exception as e:
        ones[name] = f"{type(e).__name__}: {str(e)[:300]}"
# the default W @ X table kernel of a small grid with long rows: the few-programs form
# (chunks of 16, X rows a chunk ahead), e.g. a classifier layer at batch 1
W = torch.randn(24, 40, dtype=torch.float64)
W[:, 30:] *= (torch.rand(24, 10) < 0.5)
for name, dt, xd in (("table_few_default", torch.float32, "float32"),
                     ("table_few_default_bf16", torch.bfloat16, "bfloat16")):
    k = sparse_kernel(lambda W, X: W @ X,
                      schedule=Schedule(mode="table", use_dot=False)).specialize(W.to(dt))
    sig = Signature(xd, xd, xd, ())
    v = k.variant(sig, 1, torch.device("cpu"))
    assert v.plan.prefetch_x and v.plan.chunk == 16, v.plan
    try:
        ones[name] = len(precompile_variant(v, sig, constants={"N": 1}))
    except Exception as e:
        ones[name] = f"{type(e).__name__}: {str(e)[:300]}"
out["n_one"] = ones

from dsl import conv2d
for name, mode, sched in (("conv_values", "values", dict(rows_per_program=4)),
                          ("conv_table_rows", "table", dict(rows_per_program=8, block_n=64,
                                                            conv_input="segments")),
                          ("conv_table_dot", "table", dict(rows_per_program=16, chunk=16,
                                                           use_dot=True))):
    def cfn(W, X, b):
        return relu(conv2d(W, X, stride=2, padding=1) + b)
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(16, 8, 3, 3, generator=g) * (torch.rand(16, 8, 3, 3, generator=g) < 0.3)).half()
    k = sparse_kernel(cfn, schedule=Schedule(mode=mode, **sched)).specialize(W)
    sig = Signature("float16", "float16", "float16", (("b", "row"),))
    v = k.variant(sig, 256, torch.device("cpu"))
    compiled = precompile_variant(v, sig)
    out[name] = {"kernels": len(v.kernels), "compiled": len(compiled),
                 "ptx": [c.asm["ptx"] for c in compiled], "source": v.source}

# the same kernel with X's strides baked in and passed at run time
for bake in (True, False):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(24, 40, generator=g) * (torch.rand(24, 40, generator=g) < 0.2)
    k = sparse_kernel(bias_relu, schedule=Schedule(mode="values", rows_per_program=8)
                      ).specialize(W)
    sig = Signature("float32", "float32", "float32", (("b", "row"),))
    # the unrolled plan bakes X's strides where the call gives them (a variant built
    # without them passes them at run time)
    v = k.variant(sig, 100, torch.device("cpu"), (100, 1) if bake else None)
    out[f"baked_{bake}"] = {"ptx": [c.asm["ptx"] for c in precompile_variant(v, sig)],
                            "source": v.source}

# programmatic dependent launch: the plan a Hopper GPU gets (no GPU here: the plan is set)
import os, tempfile
from dataclasses import replace
from pathlib import Path
from sparsert_triton.compiler.canonicalise import plan_for
from sparsert_triton.compiler.compile import precompile, triton_signature
from sparsert_triton.compiler.fastpasses import applies as fastpasses_applies
from sparsert_triton.compiler.lower import lower
from sparsert_triton.compiler.render import render
from sparsert_triton.compiler.specialise import specialise
from sparsert_triton.weights import as_sparse_weight
g = torch.Generator().manual_seed(0)
W = as_sparse_weight(torch.randn(24, 40, generator=g) * (torch.rand(24, 40, generator=g) < 0.2))
k = sparse_kernel(bias_relu).specialize(W)
sig = Signature("float32", "float32", "float32", (("b", "row"),))
for mode in ("values", "table"):
    plan = replace(plan_for(Schedule(mode=mode), W, 100, "float32"), pdl=True)
    src = render(lower(specialise(W, plan), plan, sig, k.program))
    path = Path(tempfile.mkdtemp(dir=os.environ["SPARSERT_CACHE_DIR"])) / "kernel.py"
    path.write_text(src)
    names = ["sparse_table_kernel"] if mode == "table" else ["sparse_kernel_0"]
    c = precompile(path, f"pdl_{mode}", names, triton_signature(sig),
                   options={"launch_pdl": True}, fast=fastpasses_applies(plan))
    out[f"pdl_{mode}"] = {"kernels": 1, "compiled": len(c), "source": src,
                          "ptx": [x.asm["ptx"] for x in c]}

# a convolution kernel does not specialise on N (batch x pixels): the same PTX either way
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sparsert_triton.compiler.compile import _import_compilable
W4 = torch.randn(16, 8, 3, 3, generator=g) * (torch.rand(16, 8, 3, 3, generator=g) < 0.2)
sig = Signature("float32", "float32", "float32", ())
unspec = {}
for mode in ("values", "table"):
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode=mode, conv_input="padded")).specialize(W4)
    v = k.variant(sig, 2 * 36, torch.device("cpu"), spatial=(6, 6))
    mod = _import_compilable(v.path, v.key)
    for fn, _ in v.kernels:
        f = getattr(mod, fn.fn.__name__ if hasattr(fn, "fn") else fn.__name__)
        types = {p: triton_signature(sig)[p] for p in f.arg_names}
        ptx = [triton.compile(ASTSource(f, types, {}, attrs), target=GPUTarget("cuda", 90, 32),
                              options={}).asm["ptx"]
               for attrs in ({}, {(f.arg_names.index("N"),): [["tt.divisibility", 16]]})]
        unspec[mode] = {"same_ptx": ptx[0] == ptx[1],
                        "unspecialised": [p.name for p in f.params if p.do_not_specialize]}
k = sparse_kernel(bias_relu).specialize(W)
v = k.variant(Signature("float32", "float32", "float32", (("b", "row"),)), 100, torch.device("cpu"))
mod = _import_compilable(v.path, v.key)
f = getattr(mod, v.kernels[0][0].fn.__name__ if hasattr(v.kernels[0][0], "fn") else v.kernels[0][0].__name__)
unspec["matmul"] = {"unspecialised": [p.name for p in f.params if p.do_not_specialize]}
out["conv_n_unspecialised"] = unspec

# every integer parameter equal to 1 (a 1x1 image or output, unit strides, one column):
# Triton's launch compiles each as a constant; the convolution kernels must still compile
conv_ones = {}
ints = [p for p, t in triton_signature(sig).items() if t == "i32"]
for name, extra in (("table_pad_px", dict(mode="table", conv_input="padded", prefetch_x=True,
                                          prefetch_tail=True)),
                    ("table_masks", dict(mode="table", conv_input="masked")),
                    ("table_taps", dict(mode="table", conv_input="segments")),
                    ("table_split", dict(mode="table", conv_input="padded", split_k=2)),
                    ("values_pad", dict(mode="values", rows_per_program=8, conv_input="padded")),
                    ("values_masked", dict(mode="values", rows_per_program=8))):
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(**extra)).specialize(W4)
    v = k.variant(sig, 1, torch.device("cpu"), (8, 1, 1, 1), spatial=(1, 1))
    try:
        conv_ones[name] = len(precompile_variant(v, sig, constants={p: 1 for p in ints}))
    except Exception as e:
        conv_ones[name] = f"{type(e).__name__}: {str(e)[:300]}"
out["conv_ones"] = conv_ones

# unrolled convolution loads: padded copy, masked (same weight, 2 x 8 x 6 x 6)
loads = {}
for name, extra in (("pad", dict(conv_input="padded")), ("masked", dict(conv_input="masked"))):
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode="values", rows_per_program=8, **extra)).specialize(W4)
    v = k.variant(sig, 2 * 36, torch.device("cpu"), (288, 36, 6, 1), spatial=(6, 6))
    ptx = "".join(c.asm["ptx"] for c in precompile_variant(v, sig))
    loads[name] = {"ld": len(re.findall(r"ld\.global", ptx)),
                   "predicated": len(re.findall(r"@%p\d+ ld\.global", ptx)),
                   "nnz": int((W4 != 0).sum())}
for name, extra in (("table_pad", dict(conv_input="padded")),
                    ("table_masks", dict(conv_input="masked"))):
    k = sparse_kernel(lambda W, X: conv2d(W, X, padding=1),
                      schedule=Schedule(mode="table", chunk=4, **extra)).specialize(W4)
    v = k.variant(sig, 2 * 36, torch.device("cpu"), (288, 36, 6, 1), spatial=(6, 6))
    ptx = "".join(c.asm["ptx"] for c in precompile_variant(v, sig))
    loads[name] = {"ld": len(re.findall(r"ld\.global", ptx)), "source": v.source}
out["conv_loads"] = loads

# the row-block modes in half precision: relu(W @ X + b) compiled for fp16 and bf16 X at
# each N, with the facts each test asks of the plan and the compiled kernels
from sparsert_triton.compiler.plan import Signature
Wb = (torch.randn(512, 1024, generator=g) * (torch.rand(512, 1024, generator=g) < 0.2)).half()


def half_variants(schedule, Ns, facts):
    k = sparse_kernel(lambda W, X, b: relu(W @ X + b), schedule=schedule).specialize(Wb)
    got = {}
    for N in Ns:
        for dt in ("float16", "bfloat16"):
            sig = Signature(dt, "float16", dt, (("b", "row"),))
            v = k.variant(sig, N, torch.device("cpu"))
            got[f"{dt}_{N}"] = facts(v.plan, precompile_variant(v, sig))
    return got


def _ptx(compiled):
    return "".join(c.asm["ptx"] for c in compiled)


# the blocks mode (16-bit columns, K slices with the in-order fix-up)
out["blocks"] = half_variants(Schedule(mode="blocks", split_k=2), (1, 16), lambda p, c: {
    "split": p.split_k, "atomics": _ptx(c).count("atom.")})
# a block starts at whole steps (tl.multiple_of): its column and value loads are vectors
kv = sparse_kernel(lambda W, X: W @ X,
                   schedule=Schedule(mode="blocks", rows_per_program=4, chunk=128)).specialize(Wb)
sig = Signature("float16", "float16", "float16", ())
ptx = _ptx(precompile_variant(kv.variant(sig, 1, torch.device("cpu")), sig))
out["blocks_vector_loads"] = len(re.findall(r"ld\.global(\.\w+)*\.v[24]\.", ptx))
# the bitmap mode: multiply-adds at N = 1, tl.dot at N = 16, K ranges with the fix-up
out["bitmap"] = half_variants(Schedule(mode="bitmap"), (1, 16), lambda p, c: {
    "split": p.split_k, "dot": p.use_dot, "popc": _ptx(c).count("popc.b32"),
    "mma": _ptx(c).count("mma")})
# the expand mode: its expansion (popc) and its tensor-core product (wgmma) at N = 1 and 512
out["expand"] = half_variants(Schedule(mode="expand"), (1, 512), lambda p, c: {
    "kernels": len(c), "popc": [k.asm["ptx"].count("popc.b32") for k in c],
    "mma": [k.asm["ptx"].count("mma") for k in c],
    "atom": [len(re.findall(r"\b(?:atom|red)\.", k.asm["ptx"])) for k in c]})

# the one-row table kernel on a row-major X (transpose_x), fp32 and fp16 at N = 8 and 128,
# X's K-stride 1 compiled as the constant Triton's launch makes it; and with pdl
Wt = torch.randn(96, 200, generator=g) * (torch.rand(96, 200, generator=g) < 0.1)
kt = sparse_kernel(bias_relu, schedule=Schedule(mode="table", use_dot=False)).specialize(Wt)
transposing = {}
for dt in ("float32", "float16"):
    sig = Signature(dt, "float32", dt, (("b", "row"),))
    for N in (8, 128):
        v = kt.variant(sig, N, torch.device("cpu"), (1, 200))
        c = precompile_variant(v, sig, constants={"sxk": 1})
        transposing[f"{dt}_{N}"] = {
            "transpose_x": v.plan.transpose_x, "kernels": len(c),
            # atomics, and the acquiring reads (atomics on triton 3.6, loads on later ones)
            "atom": len([ln for ln in c[0].asm["ptx"].splitlines()
                         if re.search(r"\b(?:atom|red)\.|\.acquire\.", ln)]),
            "st": len(re.findall(r"st\.global", c[0].asm["ptx"]))}
plan = replace(kt.variant(sig, 128, torch.device("cpu"), (1, 200)).plan, pdl=True)
src = render(lower(specialise(as_sparse_weight(Wt), plan), plan, sig, kt.program,
                   shape=(96, 200)))
path = Path(tempfile.mkdtemp(dir=os.environ["SPARSERT_CACHE_DIR"])) / "kernel.py"
path.write_text(src)
c = precompile(path, "transposing_pdl", ["sparse_table_kernel"], triton_signature(sig),
               options={"launch_pdl": True}, constants={"sxk": 1})
transposing["pdl"] = {"wait": c[0].asm["ptx"].count("griddepcontrol.wait")}
out["transposing"] = transposing

from sparsert_triton.compiler import fastpasses
out["fast_compiles"] = fastpasses.stats["compiles"]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled(run_aot_script):
    return run_aot_script(SCRIPT, timeout=900)


@pytest.mark.parametrize("name", ["values_fp32_split", "indices_fp16", "table_bf16",
                                  "table_dot_fp16", "values_fp64",
                                  "pdl_values", "pdl_table",
                                  "conv_values", "conv_table_dot",
                                  "table_prefetch_tail", "conv_table_rows"])
def test_compiles_for_sm90(compiled, name):
    c = compiled[name]
    assert c["compiled"] == c["kernels"] >= 1
    for ptx in c["ptx"]:
        assert ".entry" in ptx
        if name.startswith(("values", "indices", "pdl_values")):
            assert "call.uni" in ptx   # groups and parts stay separate functions
        if name in ("table_dot_fp16", "conv_table_dot"):
            assert "mma" in ptx
        if name == "values_fp64":
            assert "fma.rn.f64" in ptx
    if name == "values_fp64":   # every weight literal an exact float64 immediate (triton 3.6's
        # tl.fma rounds a float literal to float32: float64 code keeps multiply and add)
        import struct
        ptx = "".join(c["ptx"])
        lits = [float(v) for v in re.findall(r"(?:\* |tl\.fma\(x\d+, )(-?[0-9][0-9.e+-]*)(?:$|,)",
                                             c["source"], re.M)]
        assert len(lits) > 10
        hexes = lambda v: {"0d" + struct.pack(">d", u).hex().upper() for u in (v, -v)}
        assert all(hexes(v) & set(re.findall(r"0d[0-9A-F]{16}", ptx)) for v in lits)
    if name.startswith("pdl_"):     # every kernel waits for the one before it first
        assert all("griddepcontrol.wait" in ptx for ptx in c["ptx"])
        assert c["source"].count("gdc_wait()") == 1


def test_kernels_compile_with_n_equal_to_one(compiled):
    """A launch with N == 1 compiles N as a constant (Triton specialises integers equal to
    1): the generated code must not use N as a tensor there (the removed column slices' workspace
    offset once called ``N.to``, which a constant lacks: a CompilationError on the GPU)."""
    for name, got in compiled["n_one"].items():
        assert isinstance(got, int) and got >= 1, (name, got)


def test_convolution_kernels_compile_with_every_integer_equal_to_one(compiled):
    """One image of 1 x 1 pixels (every size, stride and N equal to 1, each compiled as a
    constant as Triton's launch would): every convolution kernel form compiles for sm_90."""
    assert len(compiled["conv_ones"]) == 6
    for name, got in compiled["conv_ones"].items():
        assert isinstance(got, int) and got >= 1, (name, got)


def test_convolution_kernels_do_not_specialise_on_n(compiled):
    """A convolution's N (batch x output pixels) is not a specialisation key, so a second
    batch size reuses the compiled kernel; the key would change no instruction (the PTX with
    N known divisible by 16 is the same). W @ X keeps it (its X loads are contiguous)."""
    c = compiled["conv_n_unspecialised"]
    for mode in ("values", "table"):
        assert c[mode] == {"same_ptx": True, "unspecialised": ["N"]}
    assert c["matmul"]["unspecialised"] == []


def test_unpadded_convolution_loads_are_masked_and_padded_ones_are_not(compiled):
    """sm_90 PTX of one unrolled convolution two ways: on the padded copy no X load is
    predicated, on the unpadded X every one is (a zero fill each: +28% SASS instructions on
    a 128-channel layer)."""
    c = compiled["conv_loads"]
    assert c["pad"]["predicated"] == 0 < c["pad"]["ld"] <= c["pad"]["nnz"]
    assert c["masked"]["predicated"] == c["masked"]["ld"] > 0
    # the table kernel without the copy: the padded kernel's loads, each masked by tap bits
    assert c["table_masks"]["ld"] == c["table_pad"]["ld"] > 0
    assert "tm & (c & 511)" in c["table_masks"]["source"]


def test_unrolled_kernels_are_split_by_function_budget(compiled):
    c = compiled["values_fp32_split"]
    assert c["kernels"] > 1
    for body in c["source"].split("@triton.jit(noinline=True)")[1:]:
        fn = body.split("\n\n")[0]
        stmts = [l for l in fn.splitlines() if "+= x" in l or "= x" in l or "tl.load(xp" in l]
        assert 0 < len(stmts) or "def _g" in fn
        assert len(stmts) <= 32


def _ops(ptx):
    body = [l.strip().split()[0] for l in ptx.splitlines()
            if l.strip() and not l.strip().startswith(("//", ".", "{", "}", "$", "@"))]
    return {op: sum(1 for b in body if b.startswith(op))
            for op in ("ld.global", "st.global", "fma.rn.f32", "call", "bar.sync")}


def test_trimmed_pipeline_keeps_the_code(compiled):
    """The fast pipeline (fastpasses) yields the same loads, FMAs, stores and calls."""
    c = compiled["values_fp32_split"]
    assert compiled["fast_compiles"] >= c["kernels"]
    for fast, full in zip(c["ptx"], c["ptx_full"]):
        assert _ops(fast) == _ops(full)
        assert _ops(fast)["fma.rn.f32"] > 0 and _ops(fast)["bar.sync"] == 0


def _instructions(ptx):
    return sum(1 for l in ptx.splitlines()
               if l.strip() and not l.strip().startswith(("//", ".", "{", "}", "$", "@")))


def test_baked_strides_shrink_the_code(compiled):
    """Constant X offsets replace per-load address arithmetic."""
    baked, passed = compiled["baked_True"], compiled["baked_False"]
    assert "xp + 100" in baked["source"] and "* sxk" not in baked["source"]
    assert _ops(baked["ptx"][0])["fma.rn.f32"] == _ops(passed["ptx"][0])["fma.rn.f32"]
    assert _instructions(baked["ptx"][0]) < 0.9 * _instructions(passed["ptx"][0])


@pytest.mark.parametrize("mode", ["values", "indices"])
def test_float64_weights_keep_their_precision_in_the_unrolled_code(mode):
    """The unrolled multiply-adds must not round a float64 weight to float32 (triton 3.6's
    ``tl.fma`` with a literal does; checked on its PTX in ``test_compiles_for_sm90``): 0.1 +
    0.1 in float64, not 0.1f + 0.1f, and no ``tl.fma`` in float64 code."""
    from sparsert_triton import Schedule, sparse_kernel
    W = torch.tensor([[0.1, 0.1, 0.0]], dtype=torch.float64)
    X = torch.ones(3, 5, dtype=torch.float64)
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode=mode)).specialize(W)
    Y = k(X)
    assert torch.all((Y - 0.2).abs() < 1e-15), Y
    assert "tl.fma" not in k.source
    k32 = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode=mode)).specialize(W.float())
    k32(X.float())
    assert "tl.fma" in k32.source          # float32 accumulation: one fused op per nonzero


def test_blocks_kernels_compile_for_sm90(compiled):
    """The blocks kernel for fp16/bf16 at N = 1 and 16, cut into 2 K slices: with their
    arrival counter (an atomic add and exchange)."""
    b = compiled["blocks"]
    assert set(b) == {"float16_1", "bfloat16_1", "float16_16", "bfloat16_16"}
    for v in b.values():
        assert v["split"] > 1 and v["atomics"] >= 2
    # 4 x 128 entries a step over 128 threads: 8-byte loads of 16-bit columns and of values
    # (one scalar 16-bit load per entry before the start of a block was hinted)
    assert compiled["blocks_vector_loads"] >= 2


def test_bitmap_kernels_compile_for_sm90(compiled):
    """The bitmap kernel for fp16/bf16 at N = 1 (multiply-adds) and 16 (tl.dot on tensor
    cores), decoding with the GPU's popc, with K ranges where the plan splits."""
    b = compiled["bitmap"]
    assert set(b) == {"float16_1", "bfloat16_1", "float16_16", "bfloat16_16"}
    for key, v in b.items():
        assert v["split"] > 1 and v["popc"] >= 1
        assert v["dot"] == key.endswith("_16") and (v["mma"] > 0) == v["dot"]


def test_expand_kernels_compile_for_sm90(compiled):
    """The expand mode's kernels for fp16/bf16 at N = 1 and 512: the one-launch kernel's
    expanding programs decode with the GPU's popc, its multiplying ones run on tensor cores,
    and its tickets and counts are atomics; a captured call's expansion decodes and
    multiplies nothing, its product multiplies on tensor cores and decodes nothing, and
    neither counts."""
    e = compiled["expand"]
    assert set(e) == {"float16_1", "bfloat16_1", "float16_512", "bfloat16_512"}
    for v in e.values():
        assert v["kernels"] == 3
        assert v["popc"][0] >= 1 and v["mma"][0] > 0 and v["atom"][0] >= 3
        assert v["popc"][1] >= 1 and v["mma"][1] == 0 and v["atom"][1] == 0
        assert v["popc"][2] == 0 and v["mma"][2] > 0 and v["atom"][2] == 0


def test_transposing_table_kernel_compiles_for_sm90(compiled):
    """The one-row table kernel on a row-major X (``transpose_x``) in fp32 and fp16 at N = 8
    and 128: one kernel, its ticket, its count and its end count atomics and its wait two
    acquiring reads (the first and the loop's), its transposing stores and the rows' stores
    in it; with pdl it waits for the kernel before once."""
    t = compiled["transposing"]
    for name in ("float32_8", "float32_128", "float16_8", "float16_128"):
        v = t[name]
        assert v["transpose_x"] and v["kernels"] == 1
        assert v["atom"] >= 5 and v["st"] >= 2
    assert t["pdl"]["wait"] == 1
