"""Numerics of the generated kernels: constants, dtypes and casts that once went wrong."""
import os

import pytest
import torch

from dsl import Schedule, clamp, relu
from sparsert_triton import sparse_kernel

MODES = ["values", "indices", "table"]
DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _mm(W, X):
    return W @ X


def _clamp_low_inf(W, X):
    return clamp(W @ X, float("-inf"), 1.0)


def _plus_inf(W, X):
    return W @ X + float("inf")


def _times_nan(W, X):
    return relu(W @ X) * float("nan")


def _clamp_high_nan(W, X):
    return clamp(W @ X, None, float("nan"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [_clamp_low_inf, _plus_inf, _times_nan])
def test_nonfinite_constants_render_as_valid_code(mode, fn):
    """inf/nan written in the function are valid Triton (``float("inf")``), with torch's
    result (NaN where torch gives NaN)."""
    W = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
    k = sparse_kernel(fn, schedule=Schedule(mode=mode)).specialize(W)
    X = torch.randn(3, 5).to(DEV)
    Y = k(X).cpu().double()
    torch.testing.assert_close(Y, k.reference(X), equal_nan=True)


def test_nan_clamp_bound_is_refused_naming_it():
    """A NaN clamp bound: torch gives NaN everywhere, compiled GPU code (H100, triton 3.6) the
    unclamped value (min/max with a NaN constant folded away): refused at trace time."""
    with pytest.raises(Exception, match="clamp `max` is NaN"):
        sparse_kernel(_clamp_high_nan)


def test_nan_clamp_bound_is_refused_by_the_ir_too():
    """Programs built as IR (the wide fuzz builds its epilogue trees so) meet the same rule."""
    from dsl import ir
    with pytest.raises(ValueError, match="clamp `max` is NaN"):
        ir.Clamp(ir.MatMul(), None, float("nan"))
    assert ir.Clamp(ir.MatMul(), float("-inf"), None).lo == float("-inf")


def _names_like_generated(W, X, b, b_s, a_sm, a, a_sn, op_a, s_b, acc, row, nmask):
    return (W @ X + b + b_s) * a_sm + a + a_sn - op_a + s_b * acc + row - nmask


@pytest.mark.parametrize("mode", MODES)
def test_operand_names_never_collide_with_generated_ones(mode):
    """Operands named like the parameters generated for other operands (``b`` and ``b_s``,
    ``a`` and ``a_sm``) or like the kernel's own names get distinct parameters."""
    W = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
    k = sparse_kernel(_names_like_generated, schedule=Schedule(mode=mode)).specialize(W)
    X = torch.randn(3, 5).to(DEV)
    g = torch.Generator().manual_seed(0)
    # every kind: rows, full (M x N), scalars and numbers
    ops = [torch.randn(2, generator=g), torch.randn(2, 5, generator=g), 0.5,
           torch.randn(2, 5, generator=g), torch.randn(1, generator=g), torch.randn(2, generator=g),
           torch.randn(2, 5, generator=g).t().contiguous().t(), -1.5, torch.randn(2, generator=g),
           torch.randn(2, 5, generator=g)]
    ops = [o.to(DEV) if isinstance(o, torch.Tensor) else o for o in ops]
    Y = k(X, *ops).cpu().double()
    torch.testing.assert_close(Y, k.reference(X, *ops), rtol=1e-5, atol=1e-5)


def _clamped_scaled(W, X, s):
    return -(-clamp(W @ X, -2.015, 0.027)) * s


@pytest.mark.parametrize("schedule", [
    Schedule(mode="values"), Schedule(mode="indices"), Schedule(mode="table"),
    Schedule(mode="table", rows_per_program=16, block_n=2, chunk=16),
    Schedule(mode="table", chunk=32, block_n=4)])
def test_float64_clamp_bounds_and_numbers_stay_float64(schedule):
    """Clamp bounds and number operands of a float64 kernel are float64 values (triton 3.6
    rounded both to float32 on the GPU; tests/test_compile_regressions.py checks the compiled
    code). Here: the interpreter's result, exact to float64 rounding."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(28, 18, generator=g, dtype=torch.float64)
    W *= torch.rand(28, 18, generator=g) < 0.2
    k = sparse_kernel(_clamped_scaled, schedule=schedule).specialize(W)
    X = torch.randn(18, 1, generator=g, dtype=torch.float64).expand(18, 82).to(DEV)
    out = torch.empty(82, 28, dtype=torch.float64, device=DEV).t()
    Y = k(X, 0.1, out=out)
    ref = k.reference(X, 0.1)
    assert (ref.abs() == 0.0027).any() and (ref.abs() == 0.2015).any()   # both bounds hit
    torch.testing.assert_close(Y.cpu(), ref, rtol=1e-15, atol=1e-15)


def _cast_bf16(W, X):
    return (W @ X).to("bfloat16")


def _inner_cast(W, X, b):
    return (W @ X + b).to("bfloat16") * 2.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn, x_dtype, w_dtype", [
    (_cast_bf16, torch.float64, torch.float64),      # float64 accumulator, bfloat16 out
    (_mm, torch.bfloat16, torch.float64),            # out in X's dtype, bfloat16
    (_inner_cast, torch.float64, torch.float64),     # an inner cast to bfloat16
    (_cast_bf16, torch.float16, torch.float64),
    (_mm, torch.float16, torch.float64)])
def test_float64_accumulator_to_half_outputs(mode, fn, x_dtype, w_dtype):
    """A float64 accumulator cast to bfloat16 (or float16) gives the rounded sum (the
    interpreter's direct float64 -> bfloat16 conversion gave 2.8e-40 for 3.0)."""
    g = torch.Generator().manual_seed(2)
    W = (torch.randn(6, 9, generator=g, dtype=torch.float64)
         * (torch.rand(6, 9, generator=g) < 0.5)).to(w_dtype)
    W[0] = 1.0
    k = sparse_kernel(fn, schedule=Schedule(mode=mode)).specialize(W)
    X = torch.randn(9, 7, generator=g).to(x_dtype)
    X[:, 0] = 1.0
    ops = [torch.randn(6, generator=g, dtype=torch.float64)] if k.program.operands else []
    Y = k(X.to(DEV), *[o.to(DEV) for o in ops]).cpu()
    ref = k.reference(X, *ops)
    assert Y.dtype == (torch.bfloat16 if fn is _cast_bf16 else x_dtype)
    if fn is _cast_bf16:
        assert Y[0, 0] == 9.0
    # the reference rounds to bfloat16 (or the output's dtype) the same way: at most one
    # unit in the last place apart (a double rounding's tie)
    ulp = 2.0 ** -7 if torch.bfloat16 in (Y.dtype, x_dtype) or fn is _inner_cast else 2.0 ** -10
    err = (Y.double() - ref.to(Y.dtype).double()).abs()
    assert (err <= ulp * ref.abs().clamp_min(2.0 ** -14) * 2 + 1e-30).all(), err.max()


@pytest.mark.skipif(DEV != "cpu", reason="the interpreter's bfloat16 tl.dot")
def test_bfloat16_default_plan_avoids_the_interpreters_dot():
    """bfloat16 in table mode (and the default mode past 2048 nonzeros): the default plan
    takes tensor cores (use_dot) on a GPU only; the interpreter computes bfloat16 tl.dot
    wrongly (792723456.0 for 3.0). Asking for use_dot there is a clear error."""
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    W = torch.ones(2, 3, dtype=torch.bfloat16)
    for s in (Schedule(mode="table"), Schedule()):
        Y = sparse_kernel(_mm, schedule=s).specialize(W)(torch.ones(3, 4, dtype=torch.bfloat16))
        assert torch.equal(Y, torch.full((2, 4), 3.0, dtype=torch.bfloat16))
    big = torch.ones(64, 64, dtype=torch.bfloat16)   # 4096 nonzeros, N > 64: table mode
    k = sparse_kernel(_mm).specialize(big)
    X = torch.randn(64, 80).to(torch.bfloat16)
    Y = k(X)
    assert not k.last_plan.use_dot and k.last_plan.mode == "table"
    torch.testing.assert_close(Y.double(), k.reference(X), rtol=2e-2, atol=2e-2)
    w = as_sparse_weight(big)
    assert plan_for(Schedule(mode="table"), w, 16, "bfloat16", interpreter=False).use_dot
    assert plan_for(Schedule(mode="table"), w, 16, "float16", interpreter=True).use_dot
    dot = Schedule(mode="table", use_dot=True, rows_per_program=16, chunk=16, block_n=16)
    with pytest.raises(ValueError, match="use_dot with bfloat16 X .*interpreter"):
        sparse_kernel(_mm, schedule=dot).specialize(big)(X)


@pytest.mark.parametrize("schedule, dtype", [
    (Schedule(mode="values", rows_per_program=4), torch.float32),
    (Schedule(mode="indices", rows_per_program=4), torch.float32),
    (Schedule(mode="table"), torch.float32),
    (Schedule(mode="table", rows_per_program=4, use_dot=False), torch.float16),
    (Schedule(mode="table", split_k=2), torch.float32),
    (Schedule(mode="table", chunk=16, prefetch_tail=True, prefetch_x=True), torch.float32),
    (Schedule(mode="table"), torch.float16),       # the fp16 default: use_dot
    (Schedule(mode="table", use_dot=True, rows_per_program=16, chunk=16, block_n=16),
     torch.float32)])
def test_nonfinite_x_follows_each_kernels_documented_rule(schedule, dtype):
    """README, Numerics: a NaN/inf in X[k, n] reaches the rows with a nonzero in column k;
    with use_dot, every row of a row group whose column union holds k (here: W = ones with
    W[1:, 0] = 0, X[0, 0] = NaN gives NaN in all 16 rows of column 0, one group)."""
    from sparsert_triton.testing import documented_product
    W = torch.ones(16, 16)
    W[1:, 0] = 0
    X = torch.ones(16, 16)
    X[0, 0] = float("nan")
    X[3, 5] = float("inf")
    X[7, 9] = float("-inf")
    k = sparse_kernel(_mm, schedule=schedule).specialize(W.to(dtype))
    Y = k(X.to(dtype).to(DEV)).cpu().double()
    ref = documented_product(k, X.to(dtype))
    torch.testing.assert_close(Y, ref, equal_nan=True, rtol=1e-3, atol=1e-3)
    nan_rows = torch.isnan(Y[:, 0]).nonzero().flatten().tolist()
    assert nan_rows == (list(range(16)) if k.last_plan.use_dot else [0])
    assert torch.isfinite(Y[:, 1:5]).all()


def _clamp_unbounded(W, X):
    return clamp(W @ X)


def _to_float64(W, X):
    return (W @ X * 0.5).to("float64")


@pytest.mark.parametrize("fn", [_clamp_unbounded, _to_float64])
def test_reference_evaluates_every_dsl_form(fn):
    """The float64 reference takes what the DSL takes: a clamp without bounds, a cast to
    float64 (it raised where the kernel ran)."""
    W = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
    k = sparse_kernel(fn).specialize(W)
    X = torch.randn(3, 5).to(DEV)
    Y = k(X).cpu()
    assert Y.dtype == (torch.float64 if fn is _to_float64 else torch.float32)
    torch.testing.assert_close(Y.double(), k.reference(X), rtol=1e-6, atol=1e-6)
