"""Hypothesis strategies and checks for fuzzing sparse kernels against ``torch.matmul``.

    from hypothesis import given
    from sparsert_triton.testing import cases, check_case

    @given(cases())
    def test_my_kernels(case):
        check_case(case, device="cpu")

Every check compares with the float64 ``torch.matmul`` of the masked dense weight followed by
the same epilogue (:func:`sparsert_triton.compiler.reference.evaluate`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from hypothesis import assume, strategies as st

from dsl import Schedule, clamp, conv2d, gelu, relu, sigmoid, silu

from .api import sparse_kernel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
# tolerance relative to the size of the sum |W| |X| (float32 accumulation, output rounding)
TOLERANCE = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2, "float64": 1e-12}


def _e_plain(W, X):
    return W @ X


def _e_bias_relu(W, X, bias):
    return relu(W @ X + bias)


def _e_gelu_scale(W, X, scale):
    return gelu(W @ X) * scale


def _e_residual_silu(W, X, residual, bias):
    return silu(W @ X + bias) + residual


def _e_clamp_sigmoid(W, X, bias):
    y = clamp(W @ X - bias, -1.5, 2.0)
    return y * sigmoid(y) * 0.5 + 1


def _e_cast(W, X, bias):
    return relu(W @ X + bias).to("float16")


# name -> (function, operand kinds)
EPILOGUES = {
    "plain": (_e_plain, ()),
    "bias_relu": (_e_bias_relu, ("row",)),
    "gelu_scale": (_e_gelu_scale, ("scalar",)),
    "gelu_number": (_e_gelu_scale, ("number",)),
    "gelu_rowscale": (_e_gelu_scale, ("row",)),
    "residual_silu": (_e_residual_silu, ("full", "row")),
    "clamp_sigmoid": (_e_clamp_sigmoid, ("row",)),
    "cast_fp16": (_e_cast, ("row",)),
}


@dataclass
class Case:
    M: int
    K: int
    N: int
    density: float
    dtype: str
    epilogue: str
    schedule: Schedule
    seed: int
    transposed_x: bool = False

    def __repr__(self):
        return (f"Case(M={self.M}, K={self.K}, N={self.N}, density={self.density:.3f}, "
                f"dtype={self.dtype!r}, epilogue={self.epilogue!r}, schedule={self.schedule!r}, "
                f"seed={self.seed}, transposed_x={self.transposed_x})")


def _pow2(lo, hi):
    return st.sampled_from([1 << i for i in range(lo, hi + 1)])


@st.composite
def schedules(draw, mode=None, dtype="float32") -> Schedule:
    """Schedules of every mode (``blocks``, ``bitmap`` and ``expand`` only when asked for:
    they compute W @ X only; ``expand`` for half-precision X only);
    table-mode dot is left out under the interpreter for bf16 (triton's interpreter computes
    bf16 ``tl.dot`` wrongly)."""
    mode = mode or draw(st.sampled_from(["values", "indices", "table"]))
    order = draw(st.sampled_from(["given", "nnz", "cluster"]))
    block_n = draw(_pow2(4, 6))
    if mode == "blocks":       # row blocks of padded nonzero lists, K slices (W @ X only)
        # (tiles of at least 2 rows x 8 columns: the interpreter's time is per program)
        return Schedule(mode=mode, rows_per_program=draw(_pow2(1, 3)), chunk=draw(_pow2(0, 4)),
                        block_n=draw(_pow2(3, 5)), row_order=draw(st.sampled_from(["given", "nnz"])),
                        split_k=draw(st.sampled_from([1, 1, 2, 3])))
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if mode == "bitmap":       # bit-per-position tiles: multiply-adds or tl.dot, K ranges
        if not (interp and dtype == "bfloat16") and dtype != "float64" and draw(st.booleans()):
            return Schedule(mode=mode, rows_per_program=16, chunk=draw(_pow2(5, 6)),
                            block_n=16, use_dot=True,
                            split_k=draw(st.sampled_from([1, 1, 2, 3])))
        # (tiles of at least 4 rows x 4 columns: the interpreter's time is per program)
        return Schedule(mode=mode, rows_per_program=draw(_pow2(2, 3)), chunk=draw(_pow2(5, 6)),
                        block_n=draw(_pow2(2, 3)), use_dot=False,
                        split_k=draw(st.sampled_from([1, 1, 2, 3])))
    if mode == "expand":       # dense tiles written per call, then tl.dot in X's dtype
        assume(dtype in ("float16", "bfloat16"))
        return Schedule(mode=mode, rows_per_program=draw(st.sampled_from([16, 32])),
                        chunk=draw(_pow2(5, 6)), block_n=draw(_pow2(4, 5)))
    if mode == "table":
        dot_ok = not (interp and dtype == "bfloat16") and dtype != "float64"
        use_dot = dot_ok and draw(st.booleans())
        if use_dot:
            return Schedule(mode=mode, rows_per_program=16, chunk=16, block_n=max(16, block_n),
                            row_order=order, use_dot=True)
        R = draw(_pow2(0, 3))
        # convolutions: the padded copy; without it masked loads, one loop per row (tap
        # masks), or one kernel tap at a time (the split kernel: its (c_in, tap) order)
        conv_input = draw(st.sampled_from(["padded", "padded", "masked", "segments"]))
        split = draw(st.sampled_from([1, 1, 2, 4]))
        plain = split > 1      # no tail or tap segments
        tail = draw(st.booleans()) if not plain else False
        return Schedule(mode=mode, rows_per_program=R, chunk=draw(_pow2(0, 4)),
                        block_n=block_n, row_order=order, use_dot=False,
                        split_k=split, conv_input=conv_input, prefetch_tail=tail,
                        # X rows a chunk ahead too
                        prefetch_x=tail and draw(st.booleans()))
    conv_input = draw(st.sampled_from(["padded", "masked"]))
    return Schedule(mode=mode, rows_per_program=draw(st.integers(1, 12)), block_n=block_n,
                    row_order=order,
                    # small functions: several parts per group, several kernels (16 each)
                    max_statements_per_function=draw(st.sampled_from([13, 16, 40, 256])),
                    streams=draw(st.sampled_from([1, 3])),
                    conv_input=conv_input)


@st.composite
def cases(draw, max_m=40, max_k=48, max_n=70, modes=None, dtypes=None) -> Case:
    """Problem shapes that do not divide the tiles, densities 0..1, every mode and epilogue."""
    dtype = draw(st.sampled_from(dtypes or list(DTYPES)))
    mode = draw(st.sampled_from(modes)) if modes else None
    return Case(M=draw(st.integers(1, max_m)), K=draw(st.integers(1, max_k)),
                N=draw(st.integers(1, max_n)),
                density=draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))),
                dtype=dtype, epilogue=draw(st.sampled_from(sorted(EPILOGUES))),
                schedule=draw(schedules(mode, dtype)), seed=draw(st.integers(0, 2**31 - 1)),
                transposed_x=draw(st.booleans()))


def make_operand(kind: str, M: int, N: int, g: torch.Generator, device, dtype):
    if kind == "number":
        return float(torch.randn((), generator=g))
    shape = {"scalar": (1,), "row": (M,), "full": (M, N)}[kind]
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def build(case: Case, device="cpu") -> Tuple[Callable, torch.Tensor, torch.Tensor, list]:
    """(specialised kernel, X, weight, operands) for a case."""
    g = torch.Generator().manual_seed(case.seed)
    dt = DTYPES[case.dtype]
    mask = torch.rand(case.M, case.K, generator=g) < case.density
    W = (torch.randn(case.M, case.K, generator=g) * mask).to(dt)
    if case.transposed_x:
        X = torch.randn(case.N, case.K, generator=g).to(device=device, dtype=dt).t()
    else:
        X = torch.randn(case.K, case.N, generator=g).to(device=device, dtype=dt)
    fn, kinds = EPILOGUES[case.epilogue]
    kern = sparse_kernel(fn, schedule=case.schedule).specialize((mask, W))
    ops = [make_operand(k, case.M, case.N, g, device, dt) for k in kinds]
    return kern, X, W, ops


def assert_matches(Y: torch.Tensor, ref: torch.Tensor, W, X, dtype: str, out_dtype=None):
    """|Y - ref| <= tol * (1 + |W| |X|) elementwise, with tol set by the dtypes involved."""
    assert Y.shape == ref.shape, (Y.shape, ref.shape)
    assert not torch.isnan(Y).any(), "NaN in the output"
    tol = max(TOLERANCE[dtype], TOLERANCE.get(out_dtype or dtype, 0))
    mag = W.detach().to("cpu", torch.float64).abs() @ X.detach().to("cpu", torch.float64).abs()
    bound = tol * (1 + mag + ref.abs())
    err = (Y.detach().to("cpu", torch.float64) - ref).abs()
    worst = (err / bound).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"max error {err.max().item():.3g} exceeds tolerance (ratio {worst:.2f})"


def check_case(case: Case, device="cpu"):
    kern, X, W, ops = build(case, device)
    Y = kern(X, *ops)
    ref = kern.reference(X, *ops)
    assert Y.dtype == DTYPES[kern.program.out.dtype if case.epilogue == "cast_fp16" else case.dtype]
    assert_matches(Y, ref, W, X, case.dtype, "float16" if case.epilogue == "cast_fp16" else None)
    return Y


# ---------------------------------------------------------------- convolutions

@dataclass
class ConvCase:
    B: int
    C_in: int
    C_out: int
    H: int
    W: int
    kh: int
    kw: int
    stride: int
    padding: object
    dilation: int
    density: float
    dtype: str
    residual: bool
    schedule: Schedule
    seed: int
    channels_last: bool = False


@st.composite
def conv_cases(draw, modes=None, dtypes=None) -> ConvCase:
    """Convolutions with odd sizes, strides 1-2, paddings 0/1/'same', dilations 1-2, every mode."""
    dtype = draw(st.sampled_from(dtypes or ["float32", "float16", "bfloat16", "float64"]))
    mode = draw(st.sampled_from(modes)) if modes else None
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    stride = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1] + (["same"] if stride == 1 and kh % 2 and kw % 2 else [])))
    H = draw(st.integers(dilation * (kh - 1) + 1 - 2 * (padding == 1), 9))
    W = draw(st.integers(dilation * (kw - 1) + 1 - 2 * (padding == 1), 9))
    return ConvCase(B=draw(st.integers(1, 2)), C_in=draw(st.integers(1, 5)),
                    C_out=draw(st.integers(1, 9)), H=max(1, H), W=max(1, W), kh=kh, kw=kw,
                    stride=stride, padding=padding, dilation=dilation,
                    density=draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))),
                    dtype=dtype, residual=draw(st.booleans()),
                    schedule=draw(schedules(mode, dtype)), seed=draw(st.integers(0, 2**31 - 1)),
                    channels_last=draw(st.booleans()))


def check_conv_case(case: ConvCase, device="cpu"):
    """Run a convolution case and compare with float64 ``F.conv2d`` plus the epilogue."""
    from dsl import conv2d
    g = torch.Generator().manual_seed(case.seed)
    dt = DTYPES[case.dtype]
    shape = (case.C_out, case.C_in, case.kh, case.kw)
    mask = torch.rand(shape, generator=g) < case.density
    Wt = (torch.randn(shape, generator=g) * mask).to(dt)
    X = torch.randn(case.B, case.C_in, case.H, case.W, generator=g).to(device=device, dtype=dt)
    if case.channels_last:
        X = X.to(memory_format=torch.channels_last)
    s, p, d = case.stride, case.padding, case.dilation

    if case.residual:
        def fn(W, X, bias, res):
            return relu(conv2d(W, X, stride=s, padding=p, dilation=d) + bias) + res
    else:
        def fn(W, X, bias):
            return relu(conv2d(W, X, stride=s, padding=p, dilation=d) + bias)
    kern = sparse_kernel(fn, schedule=case.schedule).specialize(Wt)
    Ho, Wo = kern.conv.output_size(case.H, case.W)
    ops = [torch.randn(case.C_out, generator=g).to(device=device, dtype=dt)]
    if case.residual:
        ops.append(torch.randn(case.B, case.C_out, Ho, Wo, generator=g).to(device=device, dtype=dt))
    Y = kern(X, *ops)
    ref = kern.reference(X, *ops)
    assert Y.shape == (case.B, case.C_out, Ho, Wo) and Y.dtype == dt
    # the |W| * |X| magnitude bound, through the same convolution
    mag = torch.nn.functional.conv2d(X.detach().cpu().double().abs(), Wt.double().abs(), None,
                                     kern.conv.stride, kern.conv.padding, kern.conv.dilation)
    tol = TOLERANCE[case.dtype]
    err = (Y.detach().cpu().double() - ref).abs()
    assert not torch.isnan(Y).any(), "NaN in the output"
    assert (err <= tol * (1 + mag + ref.abs())).all(), f"max error {err.max().item():.3g}"
    return Y


def masked_conv_weight(g: torch.Generator, C_out: int, C_in: int, kh: int, kw: int,
                       density: float, dtype=torch.float32) -> torch.Tensor:
    """A (C_out, C_in, kh, kw) weight drawn in float64, each entry kept with ``density``."""
    return (torch.randn(C_out, C_in, kh, kw, generator=g, dtype=torch.float64)
            * (torch.rand(C_out, C_in, kh, kw, generator=g) < density)).to(dtype)


def conv_kernel(W4, schedule: Schedule, stride=1, padding=1, dilation=1, bias_relu=False):
    """``conv2d(W, X)`` (or ``relu(conv2d(W, X) + b)``) specialised to ``W4``."""
    def conv(W, X):
        return conv2d(W, X, stride=stride, padding=padding, dilation=dilation)

    def conv_bias_relu(W, X, b):
        return relu(conv(W, X) + b)
    return sparse_kernel(conv_bias_relu if bias_relu else conv, schedule=schedule).specialize(W4)


#: a 2 -> 1 channel 3x3 weight for NaN tests: output channel 0 uses the centre tap only (output
#: (0, 0) of image 0 reads input (0, 0)), channel 1 the top-left tap (output (1, 1) reads it)
NAN_WEIGHT = torch.zeros(2, 1, 3, 3)
NAN_WEIGHT[0, 0, 1, 1] = 1.0
NAN_WEIGHT[1, 0, 0, 0] = 1.0


def assert_nan_reaches_exactly_its_readers(kernel, device="cpu"):
    """``kernel``: ``NAN_WEIGHT`` specialised with padding 1. A NaN at input (0, 0) of image
    0 must reach exactly the two outputs whose window holds it with a nonzero weight, and
    every other output must match the convolution of the NaN-free input (padding reads
    zeros, however a kernel redirects its off-image or past-N lanes)."""
    X = torch.ones(2, 1, 4, 5)
    X[0, 0, 0, 0] = float("nan")
    Y = kernel(X.to(device)).cpu()
    nan = torch.isnan(Y)
    assert nan[0, 0, 0, 0] and nan[0, 1, 1, 1] and nan.sum() == 2, nan.nonzero().tolist()
    ref = torch.nn.functional.conv2d(torch.nan_to_num(X, nan=0.0), NAN_WEIGHT, padding=1)
    assert torch.allclose(Y[~nan], ref[~nan])


# ---------------------------------------------------------------- wide cases
# What the ``cases`` above leave out (an outside generator found bugs there): weight and
# activation dtypes drawn apart, float64 with half outputs, random epilogue trees (constants
# inf/nan included), NaN/inf in X checked against each kernel's documented rule, strided,
# in-place and aliased ``out=``, operand names like the generated ones, a second call.

#: operand names that look like what the renderer generates (parameters, locals, helpers)
GENERATED_LOOKING = ("b", "b_s", "a", "a_sm", "a_sn", "op_a", "s_b", "sm_a", "sn_a", "op_op_s",
                     "acc", "row", "rmask", "nmask", "offs_n", "N", "X", "Y", "V", "W", "tl",
                     "triton", "sxk", "sym", "pid_n", "k", "c", "x", "w", "j", "g", "r", "t",
                     "slot", "start", "end", "full", "xp", "yo", "ROWS", "COLS", "VALS", "NZ",
                     "WS", "CNT", "ZB", "_epilogue", "_gelu", "_silu", "_g0", "_g0_p0",
                     "gdc_wait", "sparse_kernel_0", "sparse_table_kernel", "float", "inf")
SPECIAL_CONSTANTS = (0.0, 1.0, -1.0, 0.5, float("inf"), float("-inf"), float("nan"))


@dataclass
class WideCase:
    M: int
    K: int
    N: int
    density: float
    x_dtype: str
    w_dtype: str
    out: object            # the epilogue, an ``ir`` expression of ``W @ X``
    operands: Tuple[Tuple[str, str], ...]   # (name, kind)
    schedule: Schedule
    seed: int
    x_layout: str = "contiguous"   # contiguous, transposed, expanded (stride 0 along N), strided
    out_layout: str = "new"        # new, strided, transposed, residual (in place), aliased
    nonfinite: int = 0             # NaN/inf entries put in X
    second_n: int = 0              # a second call at this N (0: none)

    def __repr__(self):
        from dsl import ir
        return (f"WideCase(M={self.M}, K={self.K}, N={self.N}, density={self.density:.3f}, "
                f"x_dtype={self.x_dtype!r}, w_dtype={self.w_dtype!r}, "
                f"out={ir.to_source(self.out)!r}, operands={self.operands!r}, "
                f"schedule={self.schedule!r}, seed={self.seed}, x_layout={self.x_layout!r}, "
                f"out_layout={self.out_layout!r}, nonfinite={self.nonfinite}, "
                f"second_n={self.second_n})")


@st.composite
def epilogue_trees(draw, names, max_depth=4):
    """An epilogue of ``W @ X``: the product wrapped ``max_depth`` times at most in unary ops,
    ``+ - *`` with an operand or a constant (either side), clamps and inner casts; then an
    outer cast (the output dtype) or none. Returns (expression, operands it uses)."""
    from dsl import ir
    const = st.one_of(st.floats(-3, 3, allow_nan=False), st.sampled_from(SPECIAL_CONSTANTS))
    bound = st.one_of(st.floats(-3, 3, allow_nan=False),
                      st.sampled_from([c for c in SPECIAL_CONSTANTS if c == c]))
    node, used = ir.MatMul(), []
    for _ in range(draw(st.integers(0, max_depth))):
        op = draw(st.sampled_from(["unary", "binary", "binary", "clamp", "cast"]))
        if op == "unary":
            node = ir.Unary(draw(st.sampled_from(ir.UNARY_OPS)), node)
        elif op == "binary":
            if names and len(used) < len(names) and draw(st.booleans()):
                other = ir.Operand(names[len(used)])
                used.append(names[len(used)])
            else:
                other = ir.Const(draw(const))
            a, b = (other, node) if draw(st.booleans()) else (node, other)
            node = ir.Binary(draw(st.sampled_from(ir.BINARY_OPS)), a, b)
        elif op == "clamp":     # NaN bounds are refused (ir.Clamp): inf ones are drawn
            lo, hi = draw(st.one_of(st.none(), bound)), draw(st.one_of(st.none(), bound))
            if lo is not None and hi is not None and lo > hi:
                lo, hi = hi, lo
            node = ir.Clamp(node, lo, hi)
        else:
            node = ir.Cast(node, draw(st.sampled_from(ir.DTYPES)))
    if draw(st.booleans()):
        node = ir.Cast(node, draw(st.sampled_from(ir.DTYPES)))
    return node, used


@st.composite
def wide_cases(draw, modes=None, dtypes=None, max_m=24, max_k=24, max_n=40) -> WideCase:
    """Cases past ``cases``: see the section comment. ``dtypes``: X's dtype (the weight's is
    drawn from all four)."""
    x_dtype = draw(st.sampled_from(dtypes or list(DTYPES)))
    w_dtype = draw(st.sampled_from(list(DTYPES)))
    mode = draw(st.sampled_from(modes)) if modes else None
    names = draw(st.lists(st.sampled_from(GENERATED_LOOKING), max_size=4, unique=True))
    tree, used = draw(epilogue_trees(names))
    kinds = tuple((n, draw(st.sampled_from(["number", "scalar", "row", "full"]))) for n in used)
    # use_dot computes in X's dtype: never float64, nor bfloat16 in the interpreter
    dot_dtype = "float64" if "float64" in (x_dtype, w_dtype) else x_dtype
    N = draw(st.integers(1, max_n))
    return WideCase(
        M=draw(st.integers(1, max_m)), K=draw(st.integers(1, max_k)), N=N,
        density=draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))),
        x_dtype=x_dtype, w_dtype=w_dtype, out=tree, operands=kinds,
        schedule=draw(schedules(mode, dot_dtype)), seed=draw(st.integers(0, 2**31 - 1)),
        x_layout=draw(st.sampled_from(["contiguous", "transposed", "expanded", "strided"])),
        out_layout=draw(st.sampled_from(["new", "new", "strided", "transposed", "residual",
                                         "aliased"])),
        nonfinite=draw(st.sampled_from([0, 0, 1, 3])),
        second_n=draw(st.sampled_from([0, 0, 0, 1, 42])))


def documented_product(kernel, X: torch.Tensor) -> torch.Tensor:
    """``W @ X`` in float64 as the README documents it for NaN/inf in X: a non-finite
    ``X[k, n]`` reaches the outputs ``(m, n)`` of the rows ``m`` with a nonzero in column ``k``
    (pruned positions are skipped); with ``use_dot`` (the kernel's last plan), every row of
    each row group whose column union holds ``k`` (the group's dense block multiplies it:
    ``0 * inf = nan``); in ``bitmap`` mode every output of column ``n`` (its tiles are
    multiplied densely, like ``W @ X``), and so in ``expand`` mode (its dense tiles). Every
    other output is the product of the finite entries."""
    from .compiler.specialise import specialise
    W = kernel.weight.to_dense()
    Xd = X.detach().to("cpu", torch.float64)
    finite = torch.isfinite(Xd)
    acc = W @ torch.where(finite, Xd, 0.0)
    reach = W != 0                                  # reach[m, k]: column k reaches row m
    plan = kernel.last_plan
    if plan is not None and plan.bitmap_tiles:
        reach = torch.ones_like(reach)
    elif plan is not None and plan.use_dot:
        t = specialise(kernel.weight, plan)
        rows = torch.from_numpy(t.rows.astype("int64")).reshape(t.groups, -1)
        reach = torch.zeros_like(reach)
        for g in range(t.groups):
            cols = torch.from_numpy(t.cols[t.starts[g]:t.starts[g] + t.lengths[g]].astype("int64"))
            r = rows[g][rows[g] >= 0]
            reach[r[:, None], cols[None, :]] = True
    for k, n in (~finite).nonzero().tolist():
        m = reach[:, k]
        acc[m, n] += W[m, k] * Xd[k, n]
    return acc


def _magnitude(node, acc_mag, env_mag) -> torch.Tensor:
    """A bound on the size of every intermediate of the epilogue (its rounding errors scale
    with it): sums and products of the operands' magnitudes."""
    from dsl import ir
    if isinstance(node, ir.MatMul):
        return acc_mag
    if isinstance(node, ir.Operand):
        return env_mag[node.name]
    if isinstance(node, ir.Const):
        v = abs(node.value)
        return torch.tensor(v if v == v and v != float("inf") else 0.0, dtype=torch.float64)
    if isinstance(node, ir.Binary):
        a, b = _magnitude(node.a, acc_mag, env_mag), _magnitude(node.b, acc_mag, env_mag)
        return a * b if node.op == "mul" else a + b
    x = _magnitude(ir.children(node)[0], acc_mag, env_mag)
    if isinstance(node, ir.Unary) and node.op == "sigmoid":
        return torch.ones_like(x)
    return x + 1.0 if isinstance(node, ir.Unary) else x


def _wide_operand(kind, M, N, g, device, dtype):
    if kind == "number":
        return float(torch.randn((), generator=g))
    shape = {"scalar": (1,), "row": (M,), "full": (M, N)}[kind]
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def _wide_x(case: WideCase, N: int, g, device, dt, layout: str):
    K = case.K
    if layout == "transposed":
        X = torch.randn(N, K, generator=g).to(device=device, dtype=dt).t()
    elif layout == "expanded":
        X = torch.randn(K, 1, generator=g).to(device=device, dtype=dt).expand(K, N)
    elif layout == "strided":
        X = torch.randn(K + 3, 2 * N, generator=g).to(device=device, dtype=dt)[1:K + 1, ::2]
    else:
        X = torch.randn(K, N, generator=g).to(device=device, dtype=dt)
    if case.nonfinite:
        if layout == "expanded":       # (an expanded tensor has one element per row)
            X = X.contiguous()
        idx = torch.randint(0, K * N, (case.nonfinite,), generator=g)
        vals = torch.tensor([float("nan"), float("inf"), float("-inf")])[
            torch.randint(0, 3, (case.nonfinite,), generator=g)]
        for i, v in zip(idx.tolist(), vals.tolist()):
            X[i // N, i % N] = v
    return X


def check_wide_case(case: WideCase, device="cpu"):
    """Run a wide case and compare with the float64 reference of its documented semantics:
    the NaN/inf rule of :func:`documented_product`, non-finite outputs exactly where the
    reference has them (same sign for inf), finite ones within a tolerance that follows the
    epilogue's sensitivity to the accumulator and the size of its intermediates."""
    from dsl import ir
    from .api import SpecializedKernel
    from .compiler.canonicalise import canonicalise_program, output_dtype
    from .compiler.reference import evaluate
    from .weights import as_sparse_weight
    g = torch.Generator().manual_seed(case.seed)
    xt, wt = DTYPES[case.x_dtype], DTYPES[case.w_dtype]
    mask = torch.rand(case.M, case.K, generator=g) < case.density
    W = (torch.randn(case.M, case.K, generator=g, dtype=torch.float64) * mask).to(wt)
    program = canonicalise_program(ir.Program("wide", "W", "X", tuple(n for n, _ in case.operands),
                                              case.out))
    kern = SpecializedKernel(program, case.schedule, as_sparse_weight((mask, W)))
    out_dt = DTYPES[output_dtype(program, case.x_dtype)]
    for call, N in enumerate([case.N] + ([case.second_n] if case.second_n else [])):
        X = _wide_x(case, N, g, device, xt, case.x_layout if call == 0 else "transposed")
        ops = [_wide_operand(k, case.M, N, g, device, xt) for _, k in case.operands]
        host = [o.detach().cpu().clone() if isinstance(o, torch.Tensor) else o for o in ops]
        out, expect = _wide_out(case, call, X, ops, out_dt, device)
        if expect is not None:         # refused, naming the problem; then without out=
            try:
                kern(X, *ops, out=out)
                raised = None
            except ValueError as e:
                raised = str(e)
            assert raised is not None and expect in raised, (raised, case)
            out = None
        Y = kern(X, *ops, out=out)
        if out is not None:
            assert Y is out
        assert Y.dtype == out_dt and Y.shape == (case.M, N)
        acc = documented_product(kern, X)
        ref = evaluate(program, kern.weight.to_dense(), X, *host, acc=acc)
        _assert_wide_close(case, program, kern, X, host, acc, ref, Y, out_dt)
    return Y


def _wide_out(case, call, X, ops, out_dt, device):
    """(out=, the error it must raise or None) for the case's output layout."""
    M, N = case.M, X.shape[1]
    lay = case.out_layout if call == 0 else "new"
    if lay == "strided":
        return torch.empty(M, 2 * N, dtype=out_dt, device=device)[:, ::2], None
    if lay == "transposed":
        return torch.empty(N, M, dtype=out_dt, device=device).t(), None
    if lay == "residual":     # in place on a full operand of the output's dtype and layout
        for (_, kind), o in zip(case.operands, ops):
            if kind == "full" and o.dtype == out_dt:
                return o, None
    if lay == "aliased":
        if M == X.shape[0] and X.dtype == out_dt and case.x_layout != "expanded":
            return X, "out overlaps X"
        if N > 1:
            return torch.empty(M, 1, dtype=out_dt, device=device).expand(M, N), "share memory"
    return None, None


def _assert_wide_close(case, program, kern, X, ops, acc, ref, Y, out_dt):
    """Y against ``ref`` (float64, the documented product ``acc`` through the epilogue). The
    kernel's accumulator may be off by ``tol * (1 + |W| |X|)``: the reference is evaluated
    with ``acc`` moved by that much both ways, and an output whose NaN/inf-ness changes
    within it (an overflow threshold, an inf - inf) is not judged; elsewhere NaN and inf
    must be exactly where the reference has them (inf with its sign), and finite outputs
    within the spread plus ``tol`` times the size of the epilogue's intermediates."""
    from dsl import ir
    from .compiler.reference import evaluate
    dtypes = [case.x_dtype, case.w_dtype, *[n.dtype for n in ir.walk(program.out)
                                            if isinstance(n, ir.Cast)]]
    tol = max(TOLERANCE[d] for d in dtypes + [str(out_dt).replace("torch.", "")])
    Wd = kern.weight.to_dense()
    Xd = X.detach().to("cpu", torch.float64)
    mag = Wd.abs() @ torch.where(torch.isfinite(Xd), Xd, 0.0).abs()
    delta, host = tol * (1 + mag), ops
    spread, unstable = torch.zeros_like(ref), torch.zeros_like(ref, dtype=torch.bool)

    def flips(v):       # where v is NaN/inf and ref is not, or the other way round
        return (torch.isnan(v) != torch.isnan(ref)) | (torch.isinf(v) != torch.isinf(ref))
    for t in (-1.0, -0.5, 0.5, 1.0):
        moved = evaluate(program, Wd, X, *host, acc=acc + t * delta)
        unstable |= flips(moved)
        d = (moved - ref).abs()
        spread = torch.maximum(spread, torch.where(torch.isfinite(d), d, 0.0))
    # the epilogue runs in the accumulator's dtype: in float32 a constant may underflow to 0
    # or gelu(-20) be 0 exactly, where float64 keeps inf * tiny = inf
    acc_dt = torch.float64 if "float64" in (case.x_dtype, case.w_dtype) else torch.float32
    unstable |= flips(evaluate(program, Wd, X, *host, acc=acc, dtype=acc_dt).double())
    env = {n: (torch.tensor(abs(float(o)), dtype=torch.float64)
               if not isinstance(o, torch.Tensor) else
               o.detach().cpu().double().abs().reshape(
                   () if o.numel() == 1 else (-1, 1) if o.dim() == 1 else o.shape))
           for (n, _), o in zip(case.operands, ops)}
    finite = lambda t: torch.where(torch.isfinite(t), t, 0.0)   # noqa: E731
    inter = _magnitude(program.out, finite(acc).abs() + mag, env)
    bound = spread + tol * (1 + finite(inter) + finite(ref).abs())
    Yd, judged = Y.detach().to("cpu", torch.float64), ~unstable
    nan_r, nan_y = torch.isnan(ref) & judged, torch.isnan(Yd) & judged
    assert torch.equal(nan_r, nan_y), (
        f"NaN at {(nan_r != nan_y).nonzero().tolist()[:5]} (reference NaN: "
        f"{nan_r[nan_r != nan_y].tolist()[:5]}): {case!r}")
    inf_r, inf_y = torch.isinf(ref) & judged, torch.isinf(Yd) & judged
    assert torch.equal(inf_r, inf_y) and torch.equal(ref[inf_r], Yd[inf_r]), (
        f"inf at {(inf_r != inf_y).nonzero().tolist()[:5]}: {case!r}")
    ok = torch.isfinite(ref) & judged
    err = (Yd - ref).abs()
    worst = (err[ok] / bound[ok]).max().item() if ok.any() else 0.0
    assert worst <= 1.0, (f"max error ratio {worst:.2f} (error {err[ok].max().item():.3g}): "
                          f"{case!r}")
