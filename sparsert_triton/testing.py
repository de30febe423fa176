"""Hypothesis strategies and checks for fuzzing sparse kernels against ``torch.matmul``.

    from hypothesis import given
    from sparsert_triton.testing import cases, check_case

    @given(cases())
    def test_my_kernels(case):
        check_case(case, device="cpu")

Every check compares with the float64 ``torch.matmul`` of the masked dense weight followed by
the same epilogue (:func:`sparsert_triton.reference.evaluate`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from hypothesis import strategies as st

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
    """Schedules of every mode; table-mode dot is left out under the interpreter for bf16
    (triton's interpreter computes bf16 ``tl.dot`` wrongly)."""
    mode = mode or draw(st.sampled_from(["values", "indices", "table"]))
    order = draw(st.sampled_from(["given", "nnz", "cluster"]))
    block_n = draw(_pow2(4, 6))
    if mode == "table":
        interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        dot_ok = not (interp and dtype == "bfloat16") and dtype != "float64"
        use_dot = dot_ok and draw(st.booleans())
        if use_dot:
            return Schedule(mode=mode, rows_per_program=16, chunk=16, block_n=max(16, block_n),
                            row_order=order, use_dot=True)
        R = draw(_pow2(0, 3))
        P = draw(st.sampled_from([p for p in (1, 2, 4, 8) if p <= R]))
        pre = "auto" if P > 1 else draw(st.booleans())
        pad = False if P > 1 else draw(st.booleans())   # replaces tap segments (convolutions)
        split = 1 if P > 1 else draw(st.sampled_from([1, 1, 2, 4]))
        plain = P > 1 or split > 1      # no packing, tail or tap segments
        # convolutions without the padded copy: masked loads, one loop per row (tap_masks)
        masks = not pad and P == 1 and draw(st.booleans())
        pack = False if plain else draw(st.sampled_from(["auto", True]))
        tail = draw(st.booleans()) if pre is True and not plain else False
        return Schedule(mode=mode, rows_per_program=R, chunk=draw(_pow2(0, 4)),
                        block_n=block_n, row_order=order, use_dot=False, parallel_rows=P,
                        split_k=split, tap_masks=masks, pack_nonzeros=pack, prefetch=pre,
                        prefetch_tail=tail,
                        # X rows a chunk ahead too
                        prefetch_x=tail and pack is not True and draw(st.booleans()),
                        tap_segments=("auto" if P > 1 or pad or masks else False if split > 1
                                      else draw(st.booleans())),
                        pad_input=pad,
                        bake_strides=draw(st.sampled_from(["auto", True])))
    pad = draw(st.booleans())
    return Schedule(mode=mode, rows_per_program=draw(st.integers(1, 12)), block_n=block_n,
                    row_order=order,
                    max_statements_per_function=draw(st.sampled_from([16, 40, 256])),
                    max_functions_per_kernel=draw(st.sampled_from([3, 64])),
                    column_programs=draw(st.sampled_from([0, 1, 2])),
                    split_k=draw(st.sampled_from([1, 1, 2, 3])),
                    streams=draw(st.sampled_from([1, 3])),
                    bake_strides=draw(st.booleans()), pad_input=pad,
                    # convolutions without the padded copy: tap pointers or masked loads
                    tap_pointers="auto" if pad else draw(st.sampled_from(["auto", True])))


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
