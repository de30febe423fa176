"""What bounds the one-row table convolution kernel at batch 8? Four probes, one kernel each.

    python -m bench.batch_inner_probe --dlmc DIR --set {run1,affine,ksplit,rows} [--batch 8]
        [--schedules "Schedule(...); ..."] [--out FILE.csv]

The table kernels read X (NCHW) with one 32-bit load per lane and column: a column is an
output pixel, its tap's input pixel one float off the line (``dx = +-1``), and an image row
ends inside a warp, so a warp load spans two lines and cannot be vectorised. These probes
copy X once per call, zero-padded, into ``XT[c, yp, xp, b]`` (batch innermost, ``B % 4 ==
0``) and number the columns ``n = (oy, ox, b)``. A lane's four consecutive columns are then
one pixel's four images: every tap of every nonzero is one aligned 128-bit load per lane
(``ld.global.v4``), a quarter of the load instructions, whatever the stride.

    Y[b, m, oy, ox] = sum_j VALS[j] * XT.flat[4 * COLS[j] + ((oy*s)*Wp + ox*s) * B + b]

``COLS[j] = (c*Hp*Wp + dy*Wp + dx) * B / 4`` (in 16-byte units, so the compiler sees the
alignment). Each row's list is padded to a multiple of the chunk with entries reading a
zero plane appended to ``XT``, so the loop has no tail and no masks; columns past ``N``
read the zero slack after it and are not stored. The variant sets:

* ``run1``: that kernel (one row per program; 128 or 256 columns; the table entries a
  chunk ahead or not);
* ``affine``: each SM on one column tile (``%smid``, rows pulled from a per-tile atomic
  counter), so the X rows of that tile stay in its L1;
* ``ksplit``: a row's nonzeros dealt over 2-4 warps and summed at the end (the dependent-
  load chain of the longest rows cut by 2-4);
* ``rows``: 4-16 rows side by side, one warp each, on one column tile (their X reads share
  the SM's L1).

Each is timed against the library's schedules (``--schedules``) on the same layer in the
same process, all checked against ``F.conv2d`` in float64. Probes, not library code: a
variant that wins belongs in the generator as a schedule option (H100 results:
bench/NOTES.md, "Tenth session").
"""
from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from bench.probe_harness import ProbeRun, probe_args
#: Variants per question, each (columns per program, warps, COLS/VALS a chunk ahead, programs
#: per SM of the SM-affine grid or 0, warps sharing a row's nonzeros, chunk, rows side by
#: side); the result files are bench/results/batch_inner_probe_h100_<set>.csv.
VARIANT_SETS = {
    "run1": [(128, 1, False, 0, 1, 8, 1), (256, 2, False, 0, 1, 8, 1),
             (256, 1, False, 0, 1, 8, 1), (128, 1, True, 0, 1, 4, 1),
             (256, 1, True, 0, 1, 4, 1)],
    "affine": [(128, 1, False, 0, 1, 8, 1), (128, 1, False, 16, 1, 8, 1),
               (128, 1, False, 32, 1, 8, 1), (64, 1, False, 0, 1, 8, 1),
               (64, 1, False, 32, 1, 8, 1), (256, 2, False, 0, 1, 8, 1),
               (256, 2, False, 16, 1, 8, 1), (128, 1, True, 0, 1, 4, 1)],
    "ksplit": [(128, 1, False, 0, 1, 8, 1), (128, 2, False, 0, 2, 8, 1),
               (128, 2, False, 0, 2, 4, 1), (128, 4, False, 0, 4, 4, 1),
               (128, 4, False, 0, 4, 2, 1), (64, 2, False, 0, 2, 8, 1),
               (64, 1, False, 0, 1, 8, 1)],
    "rows": [(128, 1, False, 0, 1, 8, 1), (128, 4, False, 0, 1, 8, 4), (128, 8, False, 0, 1, 8, 8),
             (128, 8, False, 0, 1, 4, 8), (128, 16, False, 0, 1, 4, 16),
             (64, 8, False, 0, 1, 8, 8)],
}


@triton.jit
def transpose_pad_kernel(X, XT, C, H, W, Hp, Wp, B, BB: tl.constexpr, BW: tl.constexpr):
    """XT[c, yp, xp, b] = X[b, c, yp - 1, xp - 1] (0 outside), one program per (c, yp)."""
    pid = tl.program_id(0)
    c = pid // Hp
    yp = pid - c * Hp
    b = tl.arange(0, BB)[:, None]
    xp = tl.arange(0, BW)[None, :]
    y = yp - 1 + b * 0      # a tensor: the interpreter rejects tensor & scalar-bool masks
    x = xp - 1
    inside = (b < B) & (xp < Wp) & (y >= 0) & (y < H) & (x >= 0) & (x < W)
    v = tl.load(X + ((b * C + c) * H + y) * W + x, mask=inside, other=0.0)
    tl.store(XT + ((c * Hp + yp) * Wp + xp) * B + b, v, mask=(b < B) & (xp < Wp))


@triton.jit
def _columns(t, B, Wp, S, Wo, N, BLOCK: tl.constexpr):
    """Column tile ``t``: columns n = (oy, ox, b) -> (in range, pixel oy*Wo + ox, image b,
    offset ((oy*S)*Wp + ox*S)*B + b into one channel of XT), the offsets in aligned runs of 4."""
    offs = t * BLOCK + tl.arange(0, BLOCK)
    pix = offs // B
    b = offs - pix * B
    oy = pix // Wo
    ox = pix - oy * Wo
    xoff = (oy * S * Wp + ox * S) * B + b
    return offs < N, pix, b, tl.max_contiguous(tl.multiple_of(xoff, 4), 4)


@triton.jit
def _row_tile(XT, STARTS, LENGTHS, COLS, VALS, Y, m, t, B, Wp, S, Wo, N, sym, syb,
              BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """Y[m, tile t] = sum_j VALS[j] * XT[4*COLS[j] + xoff] over row m's (padded) list."""
    nmask, pix, b, xoff = _columns(t, B, Wp, S, Wo, N, BLOCK)
    xp = XT + xoff
    start = tl.load(STARTS + m)
    end = start + tl.load(LENGTHS + m)
    acc = tl.zeros([BLOCK], tl.float32)
    for j in range(start, end, CHUNK):
        for u in tl.static_range(CHUNK):
            c = tl.load(COLS + j + u) * 4
            acc += tl.load(VALS + j + u) * tl.load(xp + c)
    tl.store(Y + m * sym + b * syb + pix, acc, mask=nmask)


@triton.jit
def batch_inner_table_kernel(XT, STARTS, LENGTHS, COLS, VALS, Y, B, Wp, S, Wo, HWo, N,
                             sym, syb, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """acc[n] = sum_j VALS[j] * XT[4*COLS[j] + xoff[n]] over row m = program_id(0)."""
    _row_tile(XT, STARTS, LENGTHS, COLS, VALS, Y, tl.program_id(0), tl.program_id(1), B, Wp, S,
              Wo, N, sym, syb, BLOCK, CHUNK)


@triton.jit
def batch_inner_prefetch_kernel(XT, STARTS, LENGTHS, COLS, VALS, Y, B, Wp, S, Wo, HWo, N,
                                sym, syb, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """The same sum in chunks of 4 with the next chunk's COLS / VALS loaded a step ahead."""
    m = tl.program_id(0)
    nmask, pix, b, xoff = _columns(tl.program_id(1), B, Wp, S, Wo, N, BLOCK)
    xp = XT + xoff
    start = tl.load(STARTS + m)
    end = start + tl.load(LENGTHS + m)
    acc = tl.zeros([BLOCK], tl.float32)
    c0 = tl.load(COLS + start + 0)
    c1 = tl.load(COLS + start + 1)
    c2 = tl.load(COLS + start + 2)
    c3 = tl.load(COLS + start + 3)
    w0 = tl.load(VALS + start + 0)
    w1 = tl.load(VALS + start + 1)
    w2 = tl.load(VALS + start + 2)
    w3 = tl.load(VALS + start + 3)
    for j in range(start, end, 4):
        x0 = tl.load(xp + c0 * 4)
        x1 = tl.load(xp + c1 * 4)
        x2 = tl.load(xp + c2 * 4)
        x3 = tl.load(xp + c3 * 4)
        c0 = tl.load(COLS + j + 4)
        c1 = tl.load(COLS + j + 5)
        c2 = tl.load(COLS + j + 6)
        c3 = tl.load(COLS + j + 7)
        acc += w0 * x0
        acc += w1 * x1
        acc += w2 * x2
        acc += w3 * x3
        w0 = tl.load(VALS + j + 4)
        w1 = tl.load(VALS + j + 5)
        w2 = tl.load(VALS + j + 6)
        w3 = tl.load(VALS + j + 7)
    yo = b * syb + pix
    tl.store(Y + m * sym + yo, acc, mask=nmask)


@triton.jit
def batch_inner_affine_kernel(XT, ORDER, STARTS, LENGTHS, COLS, VALS, Y, CNT, T, R, NSM, B, Wp,
                              S, Wo, N, sym, syb, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """The same sum, each SM on one column tile: a program reads its SM's id (%smid), takes
    tile ``smid * T // NSM`` and pulls rows (heaviest first, ``ORDER``) from that tile's counter
    ``CNT[t]`` until it runs out, then helps the other tiles in turn, so every (row, tile)
    is done once whatever SMs the programs land on. The X rows of one tile then stay in an
    SM's L1 across the rows it computes (``CNT`` zeroed before each call)."""
    sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=tl.int32,
                                   is_pure=False, pack=1)
    t0 = sm * T // NSM
    for i in range(T):
        t = (t0 + i) % T
        r = tl.atomic_add(CNT + t, 1)
        while r < R:
            m = tl.load(ORDER + r)
            _row_tile(XT, STARTS, LENGTHS, COLS, VALS, Y, m, t, B, Wp, S, Wo, N, sym, syb,
                      BLOCK, CHUNK)
            r = tl.atomic_add(CNT + t, 1)


@triton.jit
def batch_inner_ksplit_kernel(XT, STARTS, LENGTHS, COLS, VALS, Y, B, Wp, S, Wo, HWo, N,
                              sym, syb, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
                              P: tl.constexpr):
    """The same sum with a row's nonzeros dealt over ``P`` warps (nonzero ``j`` to warp
    ``j % P``), summed across the warps at the end: each warp's chain of dependent loads is
    ``1/P`` of the row's (the longest rows set a one-wave grid's time)."""
    m = tl.program_id(0)
    nmask, pix, b, xoff = _columns(tl.program_id(1), B, Wp, S, Wo, N, BLOCK)
    p = tl.arange(0, P)
    start = tl.load(STARTS + m)
    end = start + tl.load(LENGTHS + m)
    acc = tl.zeros([P, BLOCK], tl.float32)
    for j in range(start, end, CHUNK * P):
        for u in tl.static_range(CHUNK):
            k = j + u * P + p
            c = tl.load(COLS + k) * 4
            w = tl.load(VALS + k)
            acc += w[:, None] * tl.load(XT + c[:, None] + xoff[None, :])
    tl.store(Y + m * sym + b * syb + pix, tl.sum(acc, axis=0), mask=nmask)


@triton.jit
def batch_inner_rows_kernel(XT, ORDER, STARTS, LENGTHS, COLS, VALS, Y, R, ZERO, B, Wp, S, Wo,
                            HWo, N, sym, syb, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
                            P: tl.constexpr):
    """The same sum for ``P`` rows side by side (heaviest first, ``ORDER``), one warp each,
    all on one column tile: the rows' X reads share the SM's L1. A row past its length reads
    the zero plane (``ZERO``) with weight 0."""
    rid = tl.program_id(0) * P + tl.arange(0, P)
    live = rid < R
    m = tl.load(ORDER + rid, mask=live, other=0)
    nmask, pix, b, xoff = _columns(tl.program_id(1), B, Wp, S, Wo, N, BLOCK)
    start = tl.load(STARTS + m)
    length = tl.where(live, tl.load(LENGTHS + m), 0)
    acc = tl.zeros([P, BLOCK], tl.float32)
    for j in range(0, tl.max(length, axis=0), CHUNK):
        for u in tl.static_range(CHUNK):
            ok = j + u < length
            c = tl.where(ok, tl.load(COLS + start + j + u, mask=ok, other=0), ZERO) * 4
            w = tl.load(VALS + start + j + u, mask=ok, other=0.0)
            acc += w[:, None] * tl.load(XT + c[:, None] + xoff[None, :])
    tl.store(Y + m[:, None] * sym + (b * syb + pix)[None, :], acc,
             mask=live[:, None] & nmask[None, :])


def tables(indptr, cols_chw, vals, C, Hp, Wp, B, chunk):
    """Per-row (starts, lengths, COLS * B / 4, VALS), each row padded to a multiple of ``chunk``
    with entries of weight 0 reading the zero plane ``C``."""
    starts, lengths, cs, vs = [], [], [], []
    zero = C * Hp * Wp
    pos = 0
    for m in range(len(indptr) - 1):
        k = cols_chw[indptr[m]:indptr[m + 1]]
        c, r = np.divmod(k, 9)
        dy, dx = np.divmod(r, 3)
        off = c * Hp * Wp + dy * Wp + dx
        n = len(off)
        padn = (-n) % chunk
        off = np.concatenate([off, np.full(padn, zero)])
        w = np.concatenate([vals[indptr[m]:indptr[m + 1]], np.zeros(padn, np.float32)])
        starts.append(pos)
        lengths.append(len(off))
        cs.append(off * B // 4)
        vs.append(w)
        pos += len(off)
    cs.append(np.full(chunk, zero * B // 4))      # read ahead past the last row, never used
    vs.append(np.zeros(chunk, np.float32))
    return (np.array(starts, np.int32), np.array(lengths, np.int32),
            np.concatenate(cs).astype(np.int32), np.concatenate(vs).astype(np.float32))


class BatchInnerConv:
    """3x3, padding 1, stride ``s`` convolution by the batch-innermost table kernel."""

    def __init__(self, W4: torch.Tensor, stride: int, H: int, B: int, block: int, warps: int,
                 chunk: int = 8, prefetch: bool = False, affine: int = 0, ksplit: int = 1,
                 rows: int = 1):
        if B % 4:
            raise ValueError(f"batch must be a multiple of 4, got {B}")
        self.C_out, self.C, _, _ = W4.shape
        if prefetch:
            chunk = 4
        self.kernel = batch_inner_prefetch_kernel if prefetch else batch_inner_table_kernel
        self.affine = affine        # programs per SM of the SM-affine grid (0: one per item)
        self.ksplit = ksplit        # warps sharing a row's nonzeros (batch_inner_ksplit_kernel)
        self.rows = rows            # rows side by side, one warp each (batch_inner_rows_kernel)
        self.s, self.H, self.B, self.block, self.warps, self.chunk = stride, H, B, block, warps, chunk
        self.Hp = self.Wp = H + 2
        self.Ho = (H + 2 - 3) // stride + 1
        dev = W4.device
        wf = W4.reshape(self.C_out, -1).cpu()
        mask = wf != 0
        indptr = np.concatenate([[0], mask.sum(1).cumsum(0).numpy()])
        cols = mask.nonzero()[:, 1].numpy()
        vals = wf[mask].numpy().astype(np.float32)
        st, ln, cs, vs = tables(indptr, cols, vals, self.C, self.Hp, self.Wp, B, chunk * ksplit)
        self.STARTS, self.LENGTHS = torch.tensor(st, device=dev), torch.tensor(ln, device=dev)
        self.COLS, self.VALS = torch.tensor(cs, device=dev), torch.tensor(vs, device=dev)
        self.ORDER = torch.tensor(np.argsort(-np.diff(indptr), kind="stable"), dtype=torch.int32,
                                  device=dev)
        self.CNT = torch.zeros(1024, dtype=torch.int32, device=dev)
        plane = self.Hp * self.Wp * B
        rows_past = (math.ceil(block / (B * self.Ho)) + 2) * stride + 3
        self.XT = torch.zeros((self.C + 1) * plane + rows_past * self.Wp * B + block,
                              device=dev, dtype=torch.float32)

    def __call__(self, X: torch.Tensor, Y: torch.Tensor = None) -> torch.Tensor:
        B, C, H, Wd = X.shape
        if Y is None:
            Y = torch.empty(B, self.C_out, self.Ho, self.Ho, device=X.device, dtype=X.dtype)
        transpose_pad_kernel[(C * self.Hp,)](X, self.XT, C, H, Wd, self.Hp, self.Wp, B,
                                            BB=triton.next_power_of_2(B),
                                            BW=triton.next_power_of_2(self.Wp))
        N = self.Ho * self.Ho * B
        T = triton.cdiv(N, self.block)
        if self.affine:
            if T > self.CNT.numel():
                raise ValueError(f"{T} column tiles: more than the {self.CNT.numel()} counters")
            self.CNT.zero_()
            sms = torch.cuda.get_device_properties(X.device).multi_processor_count
            batch_inner_affine_kernel[(sms * self.affine,)](
                self.XT, self.ORDER, self.STARTS, self.LENGTHS, self.COLS, self.VALS, Y,
                self.CNT, T, self.C_out, sms, B, self.Wp, self.s, self.Ho, N, Y.stride(1),
                Y.stride(0), BLOCK=self.block, CHUNK=self.chunk, num_warps=self.warps)
            return Y
        grid = (self.C_out, T)
        if self.rows > 1:
            grid = (triton.cdiv(self.C_out, self.rows), T)
            zero = self.C * self.Hp * self.Wp * B // 4
            batch_inner_rows_kernel[grid](
                self.XT, self.ORDER, self.STARTS, self.LENGTHS, self.COLS, self.VALS, Y,
                self.C_out, zero, B, self.Wp, self.s, self.Ho, self.Ho * self.Ho, N, Y.stride(1),
                Y.stride(0), BLOCK=self.block, CHUNK=self.chunk, P=self.rows,
                num_warps=self.warps)
            return Y
        if self.ksplit > 1:
            batch_inner_ksplit_kernel[grid](
                self.XT, self.STARTS, self.LENGTHS, self.COLS, self.VALS, Y, B, self.Wp, self.s,
                self.Ho, self.Ho * self.Ho, N, Y.stride(1), Y.stride(0), BLOCK=self.block,
                CHUNK=self.chunk, P=self.ksplit, num_warps=self.warps)
            return Y
        self.kernel[grid](self.XT, self.STARTS, self.LENGTHS, self.COLS, self.VALS,
                                       Y, B, self.Wp, self.s, self.Ho, self.Ho * self.Ho, N,
                                       Y.stride(1), Y.stride(0), BLOCK=self.block,
                                       CHUNK=self.chunk, num_warps=self.warps)
        return Y


def main(argv=None):
    ap = probe_args(__doc__)
    ap.add_argument("--set", default="rows", choices=sorted(VARIANT_SETS),
                    help="which variants of the probe kernel to time")
    a = ap.parse_args(argv)
    run = ProbeRun(a)
    for case in run.cases():
        for block, warps, pf, aff, ks, ch, rw in VARIANT_SETS[a.set]:
            k = BatchInnerConv(case.W4, case.stride, case.H, a.batch, block, warps, chunk=ch,
                               prefetch=pf, affine=aff, ksplit=ks, rows=rw)
            run.time(case, f"batch_inner b{block} w{warps}" + (" pf" if pf else "")
                     + (f" affine{aff}" if aff else "") + (f" ksplit{ks}" if ks > 1 else "")
                     + (f" rows{rw}" if rw > 1 else "") + f" c{ch}", k)
        run.time_schedules(case)
    return run.rows


if __name__ == "__main__":
    main()
