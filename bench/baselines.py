"""Baseline systems for ``Y = W @ X`` (W sparse M x K with a fixed mask, X dense K x N).

Each system is a function ``system(weight, X, dtype) -> f`` where ``f()`` returns ``Y``
(M x N, X's dtype and device). Set-up work (densifying, building CSR buffers) happens once
per weight and is shared by the calls made for several ``X`` buffers.

* ``dense``      -- ``torch.matmul`` of the masked dense weight; float32 with TF32 off, or
                    the half dtype (cuBLAS tensor cores).
* ``dense_tf32`` -- float32 only, TF32 on for this call (the flag is restored after).
* ``cusparse``   -- a torch CSR tensor times dense X (cuSPARSE SpMM on CUDA).
* ``triton_csr`` -- a plain Triton CSR kernel, not specialised to the mask: one output row
                    per program, a runtime loop over the row's nonzeros (unrolled by 4), one
                    weight times one X row per step, float32 accumulation: the same loop as
                    sparsert's table kernel, without its row ordering. (A first version
                    reduced (BLOCK_K x BLOCK_N) tiles with ``tl.sum`` and ran 2.1-2.6x slower
                    than that kernel on the H100.) Runs under ``TRITON_INTERPRET=1`` too.
"""
from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager
from typing import Callable, Dict

import numpy as np
import torch
import triton
import triton.language as tl

from sparsert_triton.weights import SparseWeight

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_prepared = weakref.WeakKeyDictionary()   # weight -> {(kind, dtype, device): state}


def torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _prepare(weight: SparseWeight, kind: str, dtype: torch.dtype, device, build):
    per = _prepared.setdefault(weight, {})
    key = (kind, dtype, str(device))
    if key not in per:
        per[key] = build()
    return per[key]


def _check_x(weight: SparseWeight, X: torch.Tensor, dtype: torch.dtype):
    if not isinstance(X, torch.Tensor) or X.dim() != 2 or X.shape[0] != weight.K:
        raise ValueError(f"X must be a ({weight.K}, N) tensor, got "
                         f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
    if X.dtype != dtype:
        raise TypeError(f"X is {X.dtype} but dtype is {dtype}")


@contextmanager
def tf32(enabled: bool):
    """Set cuBLAS float32 matmul to TF32 (or full precision) for the block; restore after."""
    m = torch.backends.cuda.matmul
    try:
        old, legacy = m.allow_tf32, True
        m.allow_tf32 = enabled
    except RuntimeError:          # the process already uses the newer fp32_precision API
        old, legacy = m.fp32_precision, False
        m.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        if legacy:
            m.allow_tf32 = old
        else:
            m.fp32_precision = old


def _dense_weight(weight: SparseWeight, dtype: torch.dtype, device) -> torch.Tensor:
    return _prepare(weight, "dense", dtype, device,
                    lambda: weight.to_dense(torch.float32).to(dtype).to(device).contiguous())


def _dense(weight: SparseWeight, X: torch.Tensor, dt: torch.dtype, use_tf32: bool):
    _check_x(weight, X, dt)
    W = _dense_weight(weight, dt, X.device)

    def f():
        with tf32(use_tf32):
            return torch.matmul(W, X)
    return f


def dense(weight: SparseWeight, X: torch.Tensor, dtype) -> Callable[[], torch.Tensor]:
    """``W_dense @ X``: float32 with TF32 off, or the half dtype."""
    return _dense(weight, X, torch_dtype(dtype), False)


def dense_tf32(weight: SparseWeight, X: torch.Tensor, dtype) -> Callable[[], torch.Tensor]:
    """``W_dense @ X`` in float32 with TF32 tensor cores (about 1e-3 relative error)."""
    dt = torch_dtype(dtype)
    if dt != torch.float32:
        raise ValueError(f"dense_tf32 is a float32 baseline, got {dt}")
    return _dense(weight, X, dt, True)


def _csr_tensor(weight: SparseWeight, dtype: torch.dtype, device) -> torch.Tensor:
    def build():
        with warnings.catch_warnings():     # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            return _csr(weight, dtype, device)
    return _prepare(weight, "csr", dtype, device, build)


def _csr(weight: SparseWeight, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(weight.indptr.astype(np.int32)),
        torch.from_numpy(weight.indices.astype(np.int32)),
        torch.from_numpy(weight.values).to(dtype),
        size=(weight.M, weight.K)).to(device)


def cusparse(weight: SparseWeight, X: torch.Tensor, dtype) -> Callable[[], torch.Tensor]:
    """torch CSR tensor @ dense X (cuSPARSE SpMM on CUDA; torch's CPU kernel elsewhere)."""
    dt = torch_dtype(dtype)
    _check_x(weight, X, dt)
    A = _csr_tensor(weight, dt, X.device)
    return lambda: torch.mm(A, X)


@triton.jit
def csr_spmm_kernel(X, INDPTR, INDICES, VALUES, Y, N, sxk, sxn, sym, syn,
                    BLOCK_N: tl.constexpr, UNROLL: tl.constexpr):
    """Y[row, n-tile] = sum_j VALUES[j] * X[INDICES[j], n-tile] for j in the row's range: one
    row per program, a runtime loop over its nonzeros (statically unrolled by UNROLL), one
    scalar weight times one X row per step (no cross-thread reductions)."""
    row = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    start = tl.load(INDPTR + row)
    end = tl.load(INDPTR + row + 1)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for j in range(start, end, UNROLL):
        for t in tl.static_range(UNROLL):
            k = j + t
            col = tl.load(INDICES + k, mask=k < end, other=0)
            val = tl.load(VALUES + k, mask=k < end, other=0.0).to(tl.float32)
            x = tl.load(X + col * sxk + offs_n * sxn, mask=nmask, other=0.0).to(tl.float32)
            acc += val * x          # past the row's end: val = 0 times a real row of X
    tl.store(Y + row * sym + offs_n * syn, acc.to(Y.dtype.element_ty), mask=nmask)


def csr_config(weight: SparseWeight, N: int) -> Dict[str, int]:
    """A fixed, shape-only launch configuration (no per-mask tuning): block_n up to 128 with
    one element per thread (H100: the fastest plain loop on the DLMC matrices), unroll 4."""
    block_n = 16
    while block_n < min(N, 128):
        block_n *= 2
    return {"BLOCK_N": block_n, "UNROLL": 4, "num_warps": max(1, min(4, block_n // 32))}


def triton_csr(weight: SparseWeight, X: torch.Tensor, dtype) -> Callable[[], torch.Tensor]:
    """A plain (not mask-specialised) Triton CSR SpMM."""
    dt = torch_dtype(dtype)
    _check_x(weight, X, dt)
    dev = X.device

    def build():
        return (torch.from_numpy(weight.indptr.astype(np.int32)).to(dev),
                torch.from_numpy(weight.indices.astype(np.int32)).to(dev),
                torch.from_numpy(weight.values).to(dt).to(dev))
    indptr, indices, values = _prepare(weight, "triton_csr", dt, dev, build)
    if weight.nnz == 0:                    # never hand Triton an empty buffer
        indices = torch.zeros(1, dtype=torch.int32, device=dev)
        values = torch.zeros(1, dtype=dt, device=dev)
    M, N = weight.M, X.shape[1]
    cfg = csr_config(weight, N)
    grid = (M, triton.cdiv(N, cfg["BLOCK_N"]))

    def f():
        Y = torch.empty(M, N, dtype=dt, device=dev)
        if N:
            csr_spmm_kernel[grid](X, indptr, indices, values, Y, N, X.stride(0), X.stride(1),
                                  Y.stride(0), Y.stride(1), BLOCK_N=cfg["BLOCK_N"],
                                  UNROLL=cfg["UNROLL"], num_warps=cfg["num_warps"])
        return Y
    return f


SYSTEMS = {"dense": dense, "dense_tf32": dense_tf32, "cusparse": cusparse, "triton_csr": triton_csr}


def applies(system: str, dtype) -> bool:
    """Whether a baseline is run for a dtype (TF32 is a float32 mode)."""
    return system != "dense_tf32" or torch_dtype(dtype) == torch.float32
