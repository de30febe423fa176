"""bench/smem_tile_probe.py: its tables compute the convolution (numpy emulation of the
kernel's sum against F.conv2d in float64, on the CPU), its Gluon kernel compiles for sm_90
(no GPU needed), and on a GPU the kernel itself matches F.conv2d."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.probe_harness import rel_err
from bench.smem_tile_probe import (TABLE_MODES, SmemTileConv, build_tables, emulate, geometry,
                                   kernel_for, pad_input, render_kernel, window_offset)

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _case(C, M, H, B, seed, density=0.3):
    g = torch.Generator().manual_seed(seed)
    W4 = torch.randn(M, C, 3, 3, generator=g) * (torch.rand(M, C, 3, 3, generator=g) < density)
    W4[1] = 0                                  # an empty row
    X = torch.randn(B, C, H, H, generator=g)
    return W4, X, F.conv2d(X.double(), W4.double(), padding=1)


@pytest.mark.parametrize("C,M,H,B,P,NW,SPG,U", [(5, 13, 5, 2, 1, 4, 2, 4), (8, 9, 7, 3, 2, 2, 3, 2),
                                               (3, 4, 6, 1, 1, 8, 1, 4)])
def test_tables_compute_the_convolution(C, M, H, B, P, NW, SPG, U):
    W4, X, ref = _case(C, M, H, B, seed=C * 7 + M)
    Q, HP, LSP, npad, tiles, PS = geometry(C, H, H, B, P)
    XP = pad_input(X, torch.zeros(C * PS), PS).view(C, PS).double().numpy()
    t = build_tables(W4.numpy(), LSP, H + 2, NW, SPG, U)
    rows, base, length, ent, groups = t
    assert len(base) == groups * SPG and (length % U == 0).all()
    assert len(ent) >= base[-1] + NW * length[-1] + U               # the read-ahead stays inside
    assert sorted(rows[rows < M].tolist()) == list(range(M))     # every row once
    flat = emulate(XP, t, M, NW, Q, LSP, HP, tiles)[:, :npad]
    Y = flat.reshape(M, B, H + 2, H + 2)[:, :, :H, :H].transpose(1, 0, 2, 3)
    assert rel_err(torch.from_numpy(np.ascontiguousarray(Y)), ref) < 1e-6


def test_a_window_too_large_for_shared_memory_is_refused():
    assert geometry(512, 7, 7, 8, 2) is None              # 512 x 128 floats: 256 KiB
    assert geometry(512, 7, 7, 8, 1) is not None
    with pytest.raises(ValueError, match="shared memory"):
        SmemTileConv(torch.ones(2, 512, 3, 3), 7, 7, 8, P=2, NW=4, SPG=1)
    with pytest.raises(ValueError, match="C_in must be a power of two"):
        SmemTileConv(torch.ones(2, 24, 3, 3), 7, 7, 8, P=1, NW=4, SPG=1)
    k = SmemTileConv(torch.ones(2, 16, 3, 3), 7, 7, 8, P=1, NW=4, SPG=1)
    for bad in (torch.ones(4, 16, 7, 7), torch.ones(8, 16, 7, 7, dtype=torch.float64)):
        with pytest.raises(ValueError, match="X must be float32 of shape"):
            k(bad)


def test_window_offset_is_read_from_the_llvm_ir():
    ir = "%5 = getelementptr inbounds nuw i8, ptr addrspace(3) @global_smem, i32 {}, !dbg !17"
    assert window_offset("", 4096, 0) == 0                       # the window alone
    assert window_offset(ir.format(4096), 4096, 1024) == 0       # the table after it
    assert window_offset(ir.format(1024), 4096, 1024) == 1024    # the window after the table
    with pytest.raises(RuntimeError, match="cannot tell"):
        window_offset(ir.format(512), 4096, 1024)
    with pytest.raises(ValueError, match="table must be one of"):
        render_kernel(1, 4, "global")
    assert set(TABLE_MODES) == {"entry", "block", "smem"}


@pytest.mark.parametrize("P,U,table", [(1, 4, "entry"), (2, 8, "entry"), (4, 4, "block"),
                                       (2, 8, "block"), (2, 8, "smem"), (1, 16, "smem"),
                                       (4, 8, "smem")])
def test_kernel_compiles_for_sm90_with_shared_loads(P, U, table):
    gl_runtime = pytest.importorskip("triton.experimental.gluon._runtime")
    import triton
    from triton.backends.compiler import GPUTarget
    kernel = kernel_for(P, U, table)
    names = ["XP", "ROWS", "STEP_BASE", "STEP_LEN", "ENT", "Y", "M", "PS", "HWp", "H", "W",
             "sym", "syb"]
    types = ["*fp32", "*i32", "*i32", "*i32", "*i64", "*fp32"] + ["i32"] * 7
    sig = dict(zip(names, types))
    cx = dict(C=64, WP=30, LSP=geometry(64, 28, 28, 8, P)[2], HP=64, CS=16, NW=8, SPG=4, U=U,
              LT=128, WOFF=0)
    sig.update({n: "constexpr" for n in cx})
    aligned = {(i,): [["tt.divisibility", 16]] for i in (0, 4, 5, 7)}
    k = triton.compile(gl_runtime.GluonASTSource(kernel, sig, cx, attrs=aligned),
                       target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8))
    ptx = k.asm["ptx"]
    window, tbl = 64 * cx["LSP"] * 4, (cx["LT"] * 8 * 8 if table == "smem" else 0)
    assert k.metadata.shared == window + tbl                 # the window (and the table)
    assert window_offset(k.asm["llir"], window, tbl) in (0, tbl)
    # one shared load per position and unrolled nonzero, at offsets 128 * i from one address
    assert ptx.count("ld.shared.f32") == P * cx["U"]
    assert all(f"+{128 * i}]" in ptx for i in range(P))
    assert "cp.async" in ptx                                  # the window is copied asynchronously
    if table == "block":    # a warp's U entries (8 bytes each) in 16-byte loads, not one by one
        assert ptx.count("ld.global.v2.b64") + ptx.count("ld.global.v4.b32") >= U // 2
    if table == "smem":     # ... or read from shared memory, 16 bytes at a time
        assert ptx.count("ld.shared.v2.b64") + ptx.count("ld.shared.v4.b32") >= U // 2


@pytest.mark.gpu
@pytest.mark.parametrize("P,NW,SPG,U,table", [(1, 4, 2, 4, "entry"), (2, 8, 1, 8, "entry"),
                                              (4, 4, 3, 4, "block"), (2, 16, 2, 8, "block"),
                                              (2, 16, 2, 8, "smem"), (1, 8, 3, 16, "smem"),
                                              (4, 8, 2, 8, "smem")])
def test_kernel_matches_conv2d_on_the_gpu(P, NW, SPG, U, table):
    W4, X, ref = _case(32, 37, 9, 3, seed=P + NW)
    k = SmemTileConv(W4.cuda(), 9, 9, 3, P=P, NW=NW, SPG=SPG, U=U, table=table)
    assert rel_err(k(X.cuda()).cpu(), ref) < 1e-5
