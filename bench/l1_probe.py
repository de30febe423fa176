"""What one warp-wide X load costs in L1 when its 32 lanes' addresses are aligned,
misaligned, or broken across image rows, at the warps per program of the unrolled kernels.

    python -m bench.l1_probe [--out bench/results/l1_probe_h100.csv]

Each program (``block_n`` lanes, ``num_warps`` warps) sums ``K`` loads ``X[base + o_k + a]``
over its lanes' addresses ``a``; the ``o_k`` cycle over 16 rows 4096 floats apart, so its
data stays in L1 (the unrolled convolution kernels re-read their X tile from L1 too). The
lane addresses follow the layout of the padded convolution input: ``a = (lane // W) *
(W + gap) + lane % W + shift`` (output rows of W pixels, input rows ``gap`` wider,
``shift`` the kernel tap's horizontal offset). ``W = 32, gap = 0, shift = 0`` is one aligned
128-byte line per warp; ``shift = 1`` two lines; ``W = 28, gap = 2`` the 28-wide layers'
pattern. One program per SM, like the 16-warp unrolled form. The time per load per SM says
how many L1 cycles such a load takes (``cycles_per_load`` at the GPU's clock).
"""
from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

COLUMNS = ["block_n", "num_warps", "W", "gap", "shift", "K", "programs", "median_us",
           "ns_per_warp_load"]

#: (W, gap, shift): aligned, misaligned by one float, the 28-wide layers' rows, a 56-wide row
PATTERNS = [(32, 0, 0), (32, 0, 1), (28, 2, 0), (28, 2, 1), (56, 2, 1)]


@triton.jit
def probe_kernel(X, Y, K, BN: tl.constexpr, W: tl.constexpr, GAP: tl.constexpr,
                 SHIFT: tl.constexpr):
    """Y[pid, lane] = sum_k X[pid * 65536 + (k % 16) * 4096 + addr(lane)]."""
    pid = tl.program_id(0)
    lane = tl.arange(0, BN)
    addr = (lane // W) * (W + GAP) + lane % W + SHIFT
    xp = X + pid * 65536 + addr
    acc = tl.zeros([BN], tl.float32)
    for k in range(K):
        acc += tl.load(xp + (k % 16) * 4096)
    tl.store(Y + pid * BN + lane, acc)


def reference(X: torch.Tensor, programs: int, K: int, BN: int, W: int, gap: int, shift: int):
    lane = torch.arange(BN)
    addr = (lane // W) * (W + gap) + lane % W + shift
    rows = torch.arange(K) % 16
    idx = (torch.arange(programs)[:, None, None] * 65536 + rows[None, :, None] * 4096
           + addr[None, None, :])
    return X.cpu().double()[idx].sum(1)


def run(X, programs, K, BN, warps, W, gap, shift):
    Y = torch.empty(programs, BN, dtype=torch.float32, device=X.device)
    probe_kernel[(programs,)](X, Y, K, BN=BN, W=W, GAP=gap, SHIFT=shift, num_warps=warps)
    return Y


def buffer(programs: int, device) -> torch.Tensor:
    """Each program's 64k floats (16 rows of 4096, at most ~600 used per row)."""
    return torch.randn(programs * 65536, device=device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/l1_probe_h100.csv")
    ap.add_argument("--K", type=int, default=4096)
    a = ap.parse_args(argv)
    from bench.report import write_rows
    from bench.timing import graph_median_us, require_cuda
    require_cuda()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    X = buffer(sms, "cuda")
    rows = []
    for BN, warps in ((512, 16), (256, 8), (128, 4)):
        for W, gap, shift in PATTERNS:
            us = graph_median_us([lambda: run(X, sms, a.K, BN, warps, W, gap, shift)])
            rows.append(dict(block_n=BN, num_warps=warps, W=W, gap=gap, shift=shift, K=a.K,
                             programs=sms, median_us=round(us, 2),
                             ns_per_warp_load=round(us * 1e3 / (a.K * warps), 3)))
            print(rows[-1], flush=True)
    write_rows(a.out, COLUMNS, rows)


if __name__ == "__main__":
    main()
