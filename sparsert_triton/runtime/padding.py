"""The zero-padded copy of a convolution's input (``pad_input``), in one kernel.

``Xp[b, c, y, x] = X[b, c, y - ph, x - pw]`` inside the image and 0 on the border, for
``Xp`` of shape (B, C, H + 2 ph, W + 2 pw), contiguous. ``torch.nn.functional.pad`` does the
same with two kernels (a fill, then a copy of the interior); here each output element is
written once, reading X through its strides (any memory layout).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

from ..compiler.compile import interpreting
from .direct import Launcher


@triton.jit
def _zero_pad_kernel(X, Y, ROWS, C, H, W, Hp, Wp, ph, pw, sxb, sxc, sxh, sxw,
                     BR: tl.constexpr, BW: tl.constexpr, PDL: tl.constexpr):
    """A (BR x BW) tile of padded rows: row r of Y's (B*C*Hp) x Wp view, columns pid1*BW...
    ``PDL``: launched as a programmatic dependent launch, wait for the kernel before."""
    if PDL:
        gdc_wait()
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    x = tl.program_id(1) * BW + tl.arange(0, BW)
    y = r % Hp
    plane = r // Hp
    b = plane // C
    c = plane - b * C
    iy = (y - ph)[:, None]
    ix = (x - pw)[None, :]
    inside = (r < ROWS)[:, None] & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    src = (b * sxb + c * sxc)[:, None] + iy * sxh + ix * sxw
    v = tl.load(X + src, mask=inside, other=0.0)
    tl.store(Y + r[:, None] * Wp + x[None, :], v, mask=(r < ROWS)[:, None] & (x < Wp)[None, :])


#: one direct launcher per tile shape (the shape is a compile-time constant of the kernel, and
#: the launcher's cache key does not see constants)
_launchers = {}


def zero_pad(X: torch.Tensor, ph: int, pw: int, pdl: bool = False) -> torch.Tensor:
    """X (B, C, H, W) zero-padded by ``ph`` rows and ``pw`` columns on each side, contiguous.
    ``pdl``: a programmatic dependent launch (the GPU may start it while the kernel before it
    finishes; it waits for that kernel before reading X)."""
    B, C, H, W = X.shape
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Y = torch.empty((B, C, Hp, Wp), dtype=X.dtype, device=X.device)
    rows = B * C * Hp
    if rows == 0 or Wp == 0:
        return Y
    # plain integer arithmetic (triton.cdiv and next_power_of_2 are constexpr functions,
    # microseconds of Python per call on this per-call path)
    BW = min(256, 1 << (Wp - 1).bit_length())
    BR = max(1, 2048 // BW)
    grid = (-(-rows // BR), -(-Wp // BW))
    args = (X, Y, rows, C, H, W, Hp, Wp, ph, pw, *X.stride(), BR, BW, pdl)
    launcher = _launchers.get((BR, BW, pdl))
    if launcher is None:
        launcher = _launchers[(BR, BW, pdl)] = Launcher()
        launcher.enabled = not interpreting()
    launcher(_zero_pad_kernel, grid, args, dict(num_warps=4, launch_pdl=pdl), X.device)
    return Y
