"""Direct sparse convolution: geometry, weight layout and output size.

A convolution ``Y = conv2d(X, W)`` with ``W`` (C_out, C_in, kh, kw) is the product
``Y[m, n] = sum_k W_flat[m, k] * im2col(X)[k, n]`` with ``m = c_out``, ``n = (b, oy, ox)`` and
``k = (c_in, dy, dx)``; the kernels never build ``im2col(X)``: each nonzero ``k`` becomes a load of
``X[b, c_in, oy*sh - ph + dy*dh, ox*sw - pw + dx*dw]`` (zero outside the image, by masking).

Column order of ``W_flat`` inside this package is PyTorch's ``weight.reshape(C_out, -1)``:
``k = c_in*kh*kw + dy*kw + dx`` ("chw"). DLMC's ResNet-50 matrices (TensorFlow HWIO weights)
use ``k = (dy*kw + dx)*C_in + c_in`` ("hwc"): see :func:`tap_profile` for the check (magnitude
pruning keeps the centre tap of 3x3 kernels densest, which shows only in the "hwc" reading).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from dsl import ir

from ..weights import SparseWeight, as_sparse_weight, from_csr_arrays


@dataclass(frozen=True)
class ConvGeometry:
    C_in: int
    kh: int
    kw: int
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]

    def output_size(self, H: int, W: int) -> Tuple[int, int]:
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        Ho = (H + 2 * ph - dh * (self.kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (self.kw - 1) - 1) // sw + 1
        return Ho, Wo

    def padded_size(self, H: int, W: int) -> Tuple[int, int]:
        """(Hp, Wp): the input's size once zero-padded by ``padding`` on every side."""
        return H + 2 * self.padding[0], W + 2 * self.padding[1]

    def padded_offsets(self, H: int, W: int) -> np.ndarray:
        """Per column ``k = (c_in, dy, dx)`` (chw order), its offset in a contiguous zero-padded
        input of one image: ``c_in*Hp*Wp + dy*dh*Wp + dx*dw`` (int64, length C_in*kh*kw). Output
        position (oy, ox) of image b reads ``Xp[b].flat[oy*sh*Wp + ox*sw + offset]``."""
        Hp, Wp = self.padded_size(H, W)
        c, dy, dx = np.meshgrid(np.arange(self.C_in), np.arange(self.kh), np.arange(self.kw),
                                indexing="ij")
        off = c * (Hp * Wp) + dy * self.dilation[0] * Wp + dx * self.dilation[1]
        return off.reshape(-1).astype(np.int64)

    @property
    def tap_bits(self) -> int:
        """Bits of a ``tap_masks`` table entry that name its kernel tap (one per tap)."""
        return self.kh * self.kw

    def masked_offsets(self, H: int, W: int) -> np.ndarray:
        """``tap_masks``: per column ``k = (c_in, dy, dx)`` (chw order) of a contiguous NCHW
        input of one H x W image, the entry ``off * 2**B + 2**tap`` (B = kh*kw, tap = dy*kw +
        dx) with ``off = c_in*H*W + (dy*dh - ph)*W + (dx*dw - pw)``: output (oy, ox) reads
        ``X[b].flat[oy*sh*W + ox*sw + off]`` where the lane's bit ``tap`` says that position
        is in the image. int64; every entry fits int32 (else ValueError)."""
        B = self.tap_bits
        if B > 16:
            raise ValueError(f"tap_masks supports kernels of up to 16 taps, got "
                             f"{self.kh}x{self.kw}: use pad_input")
        if not self.masks_fit(H, W):
            raise ValueError(f"tap_masks: one image of X ({self.C_in}x{H}x{W}) is too large "
                             f"for 32-bit table entries ({B} tap bits): use pad_input")
        c, dy, dx = np.meshgrid(np.arange(self.C_in), np.arange(self.kh), np.arange(self.kw),
                                indexing="ij")
        off = self._masked_offset(c, dy, dx, H, W)
        return (off * 2 ** B + (1 << (dy * self.kw + dx))).reshape(-1).astype(np.int64)

    def _masked_offset(self, c, dy, dx, H: int, W: int):
        (dh, dw), (ph, pw) = self.dilation, self.padding
        return c * (H * W) + (dy * dh - ph) * W + (dx * dw - pw)

    def masks_fit(self, H: int, W: int) -> bool:
        """Whether ``tap_masks`` serves an H x W input: at most 16 kernel taps, and every
        entry ``off * 2**B + bits`` of :meth:`masked_offsets` within int32 (the extreme
        offsets are those of the first and last (c_in, dy, dx))."""
        B = self.tap_bits
        if B > 16:
            return False
        lim = 2 ** (31 - B)
        lo = self._masked_offset(0, 0, 0, H, W)
        hi = self._masked_offset(self.C_in - 1, self.kh - 1, self.kw - 1, H, W)
        return -lim <= lo and hi < lim

    def tap(self, k: int) -> Tuple[int, int, int]:
        """(c_in, dy, dx) of flattened column ``k`` (chw order)."""
        c, r = divmod(int(k), self.kh * self.kw)
        dy, dx = divmod(r, self.kw)
        return c, dy, dx


def geometry(node: ir.Conv2d, C_in: int, kh: int, kw: int) -> ConvGeometry:
    padding = node.padding
    if padding == "same":
        dh, dw = node.dilation
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            raise ValueError("padding='same' needs an odd effective kernel size "
                             f"(kernel {kh}x{kw}, dilation {node.dilation})")
        padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    return ConvGeometry(C_in, kh, kw, tuple(node.stride), tuple(padding), tuple(node.dilation))


def hwc_to_chw(indices: np.ndarray, C_in: int, kh: int, kw: int) -> np.ndarray:
    """Map "hwc" column indices (k = tap*C_in + c) to "chw" (k = c*kh*kw + tap)."""
    tap, c = np.divmod(np.asarray(indices, np.int64), C_in)
    return c * (kh * kw) + tap


def conv_weight(weight, kernel_size=None, order: str = "chw") -> Tuple[SparseWeight, Tuple[int, int, int]]:
    """A convolution weight as a (C_out, C_in*kh*kw) SparseWeight in chw order, and (C_in, kh, kw).

    ``weight``: a 4-D dense tensor (zeros = mask), a ``(mask, values)`` pair of 4-D tensors, or a
    2-D matrix form with ``kernel_size=(C_in, kh, kw)`` and its column ``order`` ("chw" or
    "hwc", e.g. DLMC)."""
    if order not in ("chw", "hwc"):
        raise ValueError(f"order must be 'chw' or 'hwc', got {order!r}")
    if kernel_size is None:
        shape = (tuple(weight[0].shape) if isinstance(weight, tuple) else
                 tuple(getattr(weight, "shape", ())))
        if len(shape) != 4:
            raise ValueError("a convolution weight must be 4-D (C_out, C_in, kh, kw), got shape "
                             f"{shape}; for a 2-D matrix pass kernel_size=(C_in, kh, kw)")
        C_out, C_in, kh, kw = shape
        if isinstance(weight, tuple):
            weight = (weight[0].reshape(C_out, -1), weight[1].reshape(C_out, -1)
                      if weight[1].dim() == 4 else weight[1])
        else:
            weight = weight.reshape(C_out, -1)
        return as_sparse_weight(weight), (C_in, kh, kw)
    C_in, kh, kw = (int(v) for v in kernel_size)
    w = as_sparse_weight(weight)
    if w.K != C_in * kh * kw:
        raise ValueError(f"weight has {w.K} columns but kernel_size {kernel_size} needs "
                         f"{C_in * kh * kw}")
    if order == "hwc":
        w = from_csr_arrays(w.M, w.K, w.indptr, hwc_to_chw(w.indices, C_in, kh, kw),
                            w.values, w.dtype, w.device)
    return w, (C_in, kh, kw)


def tap_profile(indices, C_in: int, kh: int, kw: int, order: str) -> np.ndarray:
    """Nonzeros per kernel tap (dy, dx) when columns are read in ``order``."""
    k = np.asarray(indices, np.int64)
    tap = k % (kh * kw) if order == "chw" else k // C_in
    return np.bincount(tap, minlength=kh * kw).reshape(kh, kw)
