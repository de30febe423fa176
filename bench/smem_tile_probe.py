"""Does an X tile in shared memory, read by many rows at once, beat the table kernel at batch 8?

    python -m bench.smem_tile_probe --dlmc DIR [--batch 8] [--only g3] [--schedules "..."]
        [--out FILE.csv]

SparseRT's convolution keeps a tile of the input in shared memory and lets every output row
read it. This probe is that kernel for a 3x3, stride-1, padding-1 convolution (NCHW), as a
Gluon kernel (GPU only: the interpreter cannot run Gluon) beside the library's kernels.

X is copied once per call, zero-padded, into ``XP[c, q]`` with ``q = (b*Hp + yp)*Wp + xp``
(``Hp, Wp = H + 2, W + 2``; plane stride ``PS``). The output at ``q`` (top-left anchored,
``y < H`` and ``x < W``; other ``q`` are computed and not stored) is

    Y[b, m, y, x] = sum over row m's nonzeros (c, dy, dx, w) of  w * XP[c, q + dy*Wp + dx]

A program takes ``Q`` consecutive positions ``q0 .. q0+Q`` and copies the window
``XP[:, q0 : q0+Q+HP]`` (``HP >= 2*Wp + 2``) into shared memory, ``[C, LSP]`` floats. Its
``NW`` warps then run ``NW`` rows side by side (heaviest rows first, one per warp, each
row's list padded with zero weights to the longest of the ``NW``), ``SPG`` such steps per
program. One table entry per nonzero and warp, 64 bits: the byte offset
``(c*LSP + dy*Wp + dx) * 4`` and the weight's bits. Each lane holds ``P`` positions 32
apart, so a warp's read of one nonzero is ``P`` conflict-free shared loads at immediate
offsets (inline ``ld.shared``; Gluon's shared-memory views index only their leading
dimension). A program's ``Q = 32 * P``.

Bounds (H100): shared memory serves 128 B per clock per SM, i.e. 32 multiply-adds if each
reads its own X element, about 7.4 T/s on 132 SMs: a 90%-sparse ResNet-50 3x3 layer at batch
8 (~92 M multiply-adds) can take no less than ~12.5 us this way. The library's table kernel
reads the same elements through L1 at ~8-9 TB/s (bench/NOTES.md, "Tenth session").

Measured (H100, bench/NOTES.md "Eleventh session"): with the step's table in shared memory
(``table="smem"``) it ties the table kernel on the 128/256-channel layers at batch 8 (41-47
us against 44-48) and loses on the 64/512-channel ones; ncu finds it bound by the shared-
memory pipe (0.61 wavefronts per clock per SM, mio throttle and short scoreboard stalls).
A probe, not library code.
"""
from __future__ import annotations

import functools
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import triton

from bench.probe_harness import ProbeRun, probe_args
from sparsert_triton.compile import import_kernels

#: (P positions per lane, NW warps = rows side by side, SPG steps per program, U unroll,
#: table mode: 0 entry, 1 block, 2 smem; see ``render_kernel``)
VARIANTS = [(2, 16, 4, 8, 1), (4, 16, 4, 8, 1), (8, 16, 4, 8, 1), (1, 16, 4, 8, 1),
            (2, 16, 4, 8, 0), (4, 16, 4, 8, 0)]
#: Shared memory per program the H100 allows (bytes).
SMEM_LIMIT = 227 * 1024


def geometry(C: int, H: int, W: int, B: int, P: int):
    """(Q, HP, LSP, Npad, tiles, PS) of the padded layout and one program's window, or None
    where the window of all C channels does not fit in shared memory."""
    Hp, Wp = H + 2, W + 2
    Q = 32 * P
    HP = triton.next_power_of_2(2 * Wp + 2)
    LSP = triton.next_power_of_2(Q + HP)
    if C * LSP * 4 > SMEM_LIMIT:
        return None
    npad = B * Hp * Wp
    tiles = math.ceil(npad / Q)
    PS = tiles * Q + HP
    return Q, HP, LSP, npad, tiles, PS


def pad_input(X: torch.Tensor, XP: torch.Tensor, PS: int) -> torch.Tensor:
    """Copy X (B, C, H, W) into the zero-bordered XP[c, (b*Hp + yp)*Wp + xp] (borders and
    slack stay zero: written once, when XP is made)."""
    B, C, H, W = X.shape
    view = XP.view(C, PS)[:, :B * (H + 2) * (W + 2)].view(C, B, H + 2, W + 2)
    view[:, :, 1:H + 1, 1:W + 1].copy_(X.transpose(0, 1))
    return XP


def build_tables(W4: np.ndarray, LSP: int, Wp: int, NW: int, SPG: int, U: int):
    """Steps of ``NW`` rows (heaviest first) and their entries, warp-major within a step.

    Returns (ROWS [steps*NW] int32 (``M`` for a missing row), STEP_BASE [steps] int32,
    STEP_LEN [steps] int32, ENTRIES int64 (low word: byte offset ``(c*LSP + dy*Wp + dx)*4``,
    high word: the float32 weight's bits; ``U`` more past the end, which the kernel's read-
    ahead of the last block loads), groups). The steps are padded to a multiple of ``SPG``
    with empty ones."""
    M = W4.shape[0]
    flat = W4.reshape(M, -1)
    nnz = (flat != 0).sum(1)
    order = np.argsort(-nnz, kind="stable")
    steps = math.ceil(M / NW)
    groups = math.ceil(steps / SPG)
    rows = np.full(groups * SPG * NW, M, np.int64)
    rows[:M] = order
    base, length, entries, pos = [], [], [], 0
    for s in range(groups * SPG):
        rs = rows[s * NW:(s + 1) * NW]
        lists = []
        for m in rs:
            if m == M:
                lists.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            k = np.nonzero(flat[m])[0]
            c, t = np.divmod(k, 9)
            dy, dx = np.divmod(t, 3)
            lists.append(((c * LSP + dy * Wp + dx) * 4, flat[m, k].astype(np.float32)))
        L = max(len(o) for o, _ in lists)
        L = -(-L // U) * U
        for o, w in lists:
            oo = np.zeros(L, np.int64)
            ww = np.zeros(L, np.float32)
            oo[:len(o)] = o
            ww[:len(w)] = w
            entries.append(oo | (ww.view(np.uint32).astype(np.int64) << 32))
        base.append(pos)
        length.append(L)
        pos += L * NW
    entries.append(np.zeros(U, np.int64))          # the last block's read-ahead
    ent = np.concatenate(entries)
    return (rows.astype(np.int32), np.array(base, np.int32), np.array(length, np.int32),
            ent, groups)


def emulate(XP: np.ndarray, tables, M: int, NW: int, Q: int, LSP: int, HP: int, tiles: int):
    """What the kernel computes, in numpy: Y_flat[m, q] over every tile (tests check the
    tables on the CPU with it)."""
    rows, base, length, ent, groups = tables
    C = XP.shape[0]
    out = np.zeros((M, tiles * Q))
    for t in range(tiles):
        win = np.zeros((C, LSP))
        win[:, :Q + HP] = XP[:, t * Q:t * Q + Q + HP]
        flatwin = win.reshape(-1)
        for s in range(len(base)):
            L = length[s]
            for w in range(NW):
                m = rows[s * NW + w]
                if m == M:
                    continue
                e = ent[base[s] + w * L: base[s] + (w + 1) * L]
                off = (e & 0xFFFFFFFF).astype(np.int64) // 4
                wt = (e >> 32).astype(np.uint32).view(np.float32).astype(np.float64)
                acc = np.zeros(Q)
                for o, v in zip(off, wt):
                    acc += v * flatwin[o:o + Q]
                out[m, t * Q:(t + 1) * Q] = acc
    return out


KERNEL_TEMPLATE = '''
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

# renamed after triton 3.6
barrier = getattr(gl, "thread_barrier", None) or gl.barrier
copy_to_shared = (async_copy.async_load if hasattr(async_copy, "async_load")
                  else async_copy.async_copy_global_to_shared)

@gluon.jit
def smem_rows_kernel(XP, ROWS, STEP_BASE, STEP_LEN, ENT, Y, M, PS, HWp, H, W, sym, syb,
                     C: gl.constexpr, WP: gl.constexpr, LSP: gl.constexpr, HP: gl.constexpr,
                     CS: gl.constexpr, NW: gl.constexpr, SPG: gl.constexpr, U: gl.constexpr,
                     LT: gl.constexpr, WOFF: gl.constexpr):
    g = gl.program_id(0)
    q0 = gl.program_id(1) * {Q}
    LS: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
    LA: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [NW, 1], [1, 0])
    buf = gl.allocate_shared_memory(gl.float32, [C, LSP], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
{TABLE_ALLOC}
    cs = gl.arange(0, CS, gl.SliceLayout(1, LS))
    S: gl.constexpr = {Q} if {Q} < HP else HP          # pieces at multiples of their size
    ss = gl.arange(0, S, gl.SliceLayout(0, LS))
    for c0 in gl.static_range(0, C, CS):
        src = gl.multiple_of(XP + (c0 + cs)[:, None] * PS + q0, [1, 4])
        for p in gl.static_range(0, {Q} + HP, S):
            copy_to_shared(buf.slice(c0, CS, 0).slice(p, S, 1), src + p + ss[None, :])
    async_copy.commit_group()
    async_copy.wait_group(0)
    barrier()
    base = gl.inline_asm_elementwise("mov.u32 $0, global_smem;", "=r", [], dtype=gl.int32,
                                     is_pure=True, pack=1) + WOFF
    ln = gl.arange(0, 32, gl.SliceLayout(0, LA))
    lane = base + ln * 4
    wv = gl.arange(0, NW, gl.SliceLayout(1, LA))
    LE: gl.constexpr = gl.BlockedLayout([1, U], [1, 32], [NW, 1], [1, 0])
    cols = gl.arange(0, U, gl.SliceLayout(0, LE))[None, :]
    wt = gl.arange(0, NW, gl.SliceLayout(1, LE))
{POSITIONS}
    for st in range(g * SPG, g * SPG + SPG):
        sb = gl.multiple_of(gl.load(STEP_BASE + st), U)
        L = gl.multiple_of(gl.load(STEP_LEN + st), U)
        m = gl.load(ROWS + st * NW + wv)
{ZEROS}
{STAGE}
{PROLOGUE}
        for j in range(0, L, U):
{NEXT}
{BODY}
        live = (m < M)[:, None]
{STORES}
'''


def split_columns(name: str, U: int) -> list:
    """Source lines that take the ``U`` columns of the [NW, U] register tensor ``name`` (a
    row held whole by each lane) as [NW] tensors ``e0 .. e{U-1}`` in the accumulators' row
    layout, by halving the row with ``gl.split`` (no arithmetic, no shuffles)."""
    lines, parts, k = [], [(name, list(range(U)))], 0
    while len(parts[0][1]) > 1:
        nxt = []
        for var, idx in parts:
            a, b = f"h{k}", f"h{k + 1}"
            k += 2
            lines.append(f"            {a}, {b} = gl.split(gl.reshape({var}, "
                         f"[NW, {len(idx) // 2}, 2]))")
            nxt += [(a, idx[0::2]), (b, idx[1::2])]
        parts = nxt
    for var, (u,) in parts:
        lines.append(f"            e{u} = gl.convert_layout(gl.reshape({var}, [NW]), "
                     f"gl.SliceLayout(1, LA))")
    return lines


TABLE_MODES = ("entry", "block", "smem")


def _reinterpret_name() -> str:
    """Gluon's shared-memory view method: ``_reinterpret`` in triton 3.6, ``reinterpret`` later."""
    from triton.experimental.gluon.language import shared_memory_descriptor
    return "reinterpret" if hasattr(shared_memory_descriptor, "reinterpret") else "_reinterpret"


def render_kernel(P: int, U: int, table: str = "entry") -> str:
    """The Gluon source for ``P`` positions per lane (one accumulator and one load per
    position, each load at its immediate offset ``128 * i`` from one address), the nonzeros
    in blocks of ``U``. ``table`` says how a warp gets its table entries: ``entry`` one load
    each, a block ahead; ``block`` the next ``U`` as one vector load per lane (every lane of a
    warp alike); ``smem`` the whole step's entries copied into shared memory first (``LT``
    per warp, a second allocation), then read a block at a time from there."""
    if table not in TABLE_MODES:
        raise ValueError(f"table must be one of {TABLE_MODES}, got {table!r}")
    pos, zeros, fmas, stores = [], [], [], []
    alloc, stage = [], []
    if table == "block":
        prologue = ["        ept = (ENT + sb + wt * L)[:, None] + cols",
                    "        blk = gl.load(ept)"]
        nxt = ["            nblk = gl.load(ept + (j + U))"]
        take = split_columns("blk", U)
        rotate = ["            blk = nblk"]
    elif table == "smem":
        alloc = ["    tb = gl.allocate_shared_memory(gl.int64, [LT // U, NW, U],",
                 "                                   gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0]))",
                 "    tb2 = tb.reshape([LT // U * NW, U])",
                 f"    tbr = tb.{_reinterpret_name()}(gl.int64, [LT // U, NW, U],",
                 "                          gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))",
                 "    LCP: gl.constexpr = gl.BlockedLayout([1, 2], [64 // U, U // 2], [NW, 1], [1, 0])",
                 "    CR: gl.constexpr = 64 // U * NW",
                 "    rr = gl.arange(0, CR, gl.SliceLayout(1, LCP))",
                 "    cc = gl.arange(0, U, gl.SliceLayout(0, LCP))[None, :]"]
        stage = ["        barrier()",
                 "        for c in gl.static_range(0, LT // U * NW, CR):",
                 "            trow = c + rr",
                 "            tblk = trow // NW",
                 "            tsrc = (ENT + sb + (trow - tblk * NW) * L + tblk * U)[:, None] + cc",
                 "            copy_to_shared(tb2.slice(c, CR, 0), tsrc, mask=(tblk * U < L)[:, None])",
                 "        async_copy.commit_group()",
                 "        async_copy.wait_group(0)",
                 "        barrier()"]
        prologue = ["        blk = tbr.index(0).load(LE)"]
        nxt = ["            nblk = tbr.index(j // U + 1).load(LE)"]
        take = split_columns("blk", U)
        rotate = ["            blk = nblk"]
    else:
        prologue = ["        ep = ENT + sb + wv * L"] + [
            f"        e{u} = gl.load(ep + {u})" for u in range(U)]
        nxt = [f"            n{u} = gl.load(ep + j + {U + u})" for u in range(U)]
        take = []
        rotate = [f"            e{u} = n{u}" for u in range(U)]
    body = list(take)
    for i in range(P):
        pos += [f"    qq{i} = q0 + {32 * i} + ln",
                f"    b{i} = qq{i} // HWp",
                f"    r{i} = qq{i} - b{i} * HWp",
                f"    y{i} = r{i} // WP",
                f"    x{i} = r{i} - y{i} * WP",
                f"    ok{i} = ((y{i} < H) & (x{i} < W))[None, :]",
                f"    yo{i} = (b{i} * syb + y{i} * W + x{i})[None, :]"]
        zeros.append(f"        acc{i} = gl.zeros([NW, 32], gl.float32, LA)")
        fmas.append(f'            acc{i} += w * gl.inline_asm_elementwise('
                    f'"ld.shared.f32 $0, [$1+{128 * i}];", "=f,r", [a], dtype=gl.float32, '
                    f'is_pure=False, pack=1)')
        stores.append(f"        gl.store(Y + m[:, None] * sym + yo{i}, acc{i}, mask=live & ok{i})")
    for u in range(U):
        body += [f"            w = (e{u} >> 32).to(gl.int32).to(gl.float32, bitcast=True)[:, None]",
                 f"            a = e{u}.to(gl.int32)[:, None] + lane[None, :]"] + fmas
    body += rotate
    return KERNEL_TEMPLATE.format(Q=32 * P, POSITIONS="\n".join(pos), ZEROS="\n".join(zeros),
                                  TABLE_ALLOC="\n".join(alloc), STAGE="\n".join(stage),
                                  PROLOGUE="\n".join(prologue), NEXT="\n".join(nxt),
                                  BODY="\n".join(body), STORES="\n".join(stores))


@functools.lru_cache(maxsize=None)
def kernel_for(P: int, U: int, table: str = "entry"):
    """The generated kernel, written to a file (Triton reads kernel source with ``inspect``)
    and imported once per process."""
    name = f"smem_rows_p{P}_u{U}_{table}"
    path = Path(tempfile.mkdtemp(prefix="smem_tile_")) / f"{name}.py"
    path.write_text(render_kernel(P, U, table))
    return import_kernels(path, name).smem_rows_kernel


def window_offset(llir: str, window_bytes: int, table_bytes: int) -> int:
    """Byte offset in shared memory that Triton's allocator gave the window (the kernel's
    inline loads address it from ``global_smem``), read from the kernel's LLVM IR: with no
    second allocation it is 0; with the table beside it, one of the two buffers starts where
    the other ends, which the IR shows as a constant offset from ``global_smem``."""
    if not table_bytes:
        return 0
    offsets = {int(v) for v in re.findall(r"@global_smem, i(?:32|64) (\d+)", llir)}
    if window_bytes in offsets:
        return 0                        # the table after the window
    if table_bytes in offsets:
        return table_bytes              # the window after the table
    raise RuntimeError(f"cannot tell where the window is in shared memory (offsets {offsets})")


class SmemTileConv:
    """3x3, stride 1, padding 1 convolution (float32, NCHW) by the shared-memory tile kernel."""

    def __init__(self, W4: torch.Tensor, H: int, W: int, B: int, P: int, NW: int, SPG: int,
                 U: int = 4, CS: int = 16, table: str = "entry"):
        self.M, self.C = W4.shape[:2]
        if tuple(W4.shape[2:]) != (3, 3):
            raise ValueError(f"W4 must be (C_out, C_in, 3, 3), got {tuple(W4.shape)}")
        if self.C & (self.C - 1):
            raise ValueError(f"C_in must be a power of two (a Gluon shared-memory shape), "
                             f"got {self.C}")
        geo = geometry(self.C, H, W, B, P)
        if geo is None:
            raise ValueError(f"the window of {self.C} channels at P={P} does not fit in "
                             f"{SMEM_LIMIT} bytes of shared memory")
        self.Q, self.HP, self.LSP, self.npad, self.tiles, self.PS = geo
        self.H, self.W, self.B, self.P, self.NW, self.SPG, self.U = H, W, B, P, NW, SPG, U
        self.CS = min(CS, self.C)
        self.table = table
        dev = W4.device
        t = build_tables(W4.detach().cpu().numpy(), self.LSP, W + 2, NW, SPG, U)
        rows, base, length, ent, self.groups = t
        self.tables = t
        # the step's table in shared memory: room for the longest step and the read-ahead
        self.LT = max(64, triton.next_power_of_2(int(length.max()) + U)) if table == "smem" else 64
        if table == "smem" and self.C * self.LSP * 4 + self.LT * NW * 8 > SMEM_LIMIT:
            raise ValueError(f"the window and a step's table ({self.LT} entries x {NW} warps) "
                             f"do not fit in {SMEM_LIMIT} bytes of shared memory")
        self.ROWS = torch.tensor(rows, device=dev)
        self.STEP_BASE = torch.tensor(base, device=dev)
        self.STEP_LEN = torch.tensor(length, device=dev)
        self.ENT = torch.tensor(ent, device=dev)
        self.XP = torch.zeros(self.C * self.PS, device=dev, dtype=torch.float32)
        self.kernel = kernel_for(P, U, table)
        self.woff = None            # the window's shared-memory offset, read after compiling

    def _launch(self, Y, H, W, woff):
        return self.kernel[(self.groups, self.tiles)](
            self.XP, self.ROWS, self.STEP_BASE, self.STEP_LEN, self.ENT, Y, self.M, self.PS,
            (H + 2) * (W + 2), H, W, Y.stride(1), Y.stride(0), C=self.C, WP=W + 2,
            LSP=self.LSP, HP=self.HP, CS=self.CS, NW=self.NW, SPG=self.SPG, U=self.U,
            LT=self.LT, WOFF=woff, num_warps=self.NW)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if tuple(X.shape) != (self.B, self.C, self.H, self.W) or X.dtype != torch.float32:
            raise ValueError(f"X must be float32 of shape {(self.B, self.C, self.H, self.W)} "
                             f"(the shape this kernel was built for), got {X.dtype} "
                             f"{tuple(X.shape)}")
        B, C, H, W = X.shape
        pad_input(X, self.XP, self.PS)
        Y = torch.empty(B, self.M, H, W, device=X.device, dtype=X.dtype)
        if self.woff is None:       # compile, read where the window went, and if it is not
            k = self._launch(Y, H, W, 0)                  # at 0, build with its offset
            sizes = (self.C * self.LSP * 4, self.LT * self.NW * 8 if self.table == "smem" else 0)
            self.woff = window_offset(k.asm["llir"], *sizes)
            if self.woff == 0:
                return Y
            k = self._launch(Y, H, W, self.woff)
            if window_offset(k.asm["llir"], *sizes) != self.woff:
                raise RuntimeError("the window's shared-memory offset moved between builds")
            return Y
        self._launch(Y, H, W, self.woff)
        return Y


def main(argv=None):
    ap = probe_args(__doc__)
    ap.add_argument("--variants", default="",
                    help="P,NW,SPG,U[,table mode 0/1/2] tuples separated by ';' "
                         "(default: VARIANTS)")
    a = ap.parse_args(argv)
    variants = ([tuple(int(v) for v in s.split(",")) for s in a.variants.split(";") if s.strip()]
                or VARIANTS)
    run = ProbeRun(a)
    for case in run.cases(stride_one_only=True):
        for v in variants:
            P, NW, SPG, U = v[:4]
            mode = TABLE_MODES[v[4]] if len(v) > 4 else "entry"
            try:
                k = SmemTileConv(case.W4, case.H, case.H, a.batch, P, NW, SPG, U, table=mode)
            except ValueError as e:
                print(f"{case.name} P={P}: {e}", flush=True)
                continue
            run.time(case, f"smem_tile P{P} NW{NW} SPG{SPG} U{U} {mode} "
                           f"grid{k.groups}x{k.tiles}", k)
        run.time_schedules(case)
    return run.rows


if __name__ == "__main__":
    main()
