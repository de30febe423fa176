"""Direct launches: the specialisation key, and (on a GPU) reuse only where Triton would."""
import pytest
import torch

from sparsert_triton.runtime.direct import spec_key


def test_spec_key_separates_what_triton_specialises_on():
    a = torch.zeros(64)
    assert spec_key([a, 1, 32, 7]) == spec_key([torch.ones(64), 1, 48, 5])
    assert spec_key([a[1:]]) != spec_key([a])                     # 16-byte alignment
    assert spec_key([a.half()]) != spec_key([a])                  # pointer type
    assert spec_key([1]) != spec_key([2]) != spec_key([16])       # == 1, % 16
    assert spec_key([2**31]) != spec_key([2**31 - 2])             # 64-bit integer
    assert spec_key([True]) != spec_key([1])
    assert spec_key([1.0]) == spec_key([2.5])                     # floats are not specialised


@pytest.mark.gpu
def test_direct_launches_match_the_reference_across_alignments_and_sizes():
    from sparsert_triton import Schedule, sparse_kernel
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 70, generator=g) * (torch.rand(40, 70, generator=g) < 0.2)
    for s in (Schedule(mode="table", chunk=4), Schedule(mode="values")):
        k = sparse_kernel(lambda W, X: W @ X, schedule=s).specialize(W)
        base = torch.randn(70, 300, device="cuda")
        for X in (base, base[:, 1:], base[:, :17], base[:, 16:], base[:, 3:200], base):
            for _ in range(3):                  # first call compiles, the next ones reuse
                Y = k(X)
            ref = (W.double() @ X.double().cpu()).cuda()
            torch.testing.assert_close(Y.double(), ref, rtol=1e-5, atol=1e-5)
        assert any(var.launcher.kernels for var in k._variants.values())


class _FakeKernel:
    """Stands in for a compiled kernel: records direct launches."""
    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.runs = []

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, gx, gy, gz, stream, function, meta, launch_meta, enter, exit_, *args):
        self.runs.append(((gx, gy, gz), stream, args))


class _FakeJit:
    """Stands in for a ``@triton.jit`` function: ``fn[grid](*args)`` compiles (once per call)."""

    def __init__(self):
        self.compiles = []

    def __getitem__(self, grid):
        def launch(*args, **opts):
            k = _FakeKernel()
            self.compiles.append((grid, args, opts, k))
            return k
        return launch


def test_launcher_reuses_a_kernel_only_for_the_same_specialisation():
    from sparsert_triton.runtime.direct import Launcher
    fn, L = _FakeJit(), Launcher(stream_of=lambda device: 7)
    dev = torch.device("cpu")
    x = torch.zeros(64)
    L(fn, (3, 2), (x, 5, 32), {"num_warps": 1}, dev)        # first: through fn[grid]
    L(fn, (4, 2), (torch.ones(64), 9, 48), {"num_warps": 1}, dev)   # same facts: direct
    assert len(fn.compiles) == 1
    k = fn.compiles[0][3]
    assert len(k.runs) == 1 and k.runs[0][0] == (4, 2, 1) and k.runs[0][1] == 7
    assert k.runs[0][2][1:] == (9, 48)
    L(fn, (4, 2), (x[1:], 9, 48), {"num_warps": 1}, dev)     # misaligned pointer: new kernel
    L(fn, (4, 2), (x, 1, 48), {"num_warps": 1}, dev)         # an integer equal to 1: new kernel
    assert len(fn.compiles) == 3
    L.enabled = False                                          # off: always fn[grid]
    L(fn, (4, 2), (x, 5, 32), {"num_warps": 1}, dev)
    assert len(fn.compiles) == 4 and len(k.runs) == 1


def test_launcher_takes_the_callers_specialisation_key():
    from sparsert_triton.runtime.direct import Launcher
    fn, L = _FakeJit(), Launcher(stream_of=lambda device: 0)
    dev, x = torch.device("cpu"), torch.zeros(64)
    L(fn, (1,), (x, 5), {}, dev, spec=spec_key([x, 5]))
    L(fn, (1,), (x, 5), {}, dev, spec=spec_key([x, 5]))     # same key: direct
    assert len(fn.compiles) == 1 and len(fn.compiles[0][3].runs) == 1
    L(fn, (1,), (x, 5), {}, dev, spec=spec_key([x, 1]))     # another key: compiles again
    assert len(fn.compiles) == 2


def test_run_works_out_the_key_once_for_all_kernels_of_a_variant(monkeypatch):
    """A variant's kernels share their arguments: one spec_key per call, the same for each."""
    from sparsert_triton import Schedule, sparse_kernel
    from sparsert_triton.runtime import launch
    from sparsert_triton.compiler.plan import Signature
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 30, generator=g) * (torch.rand(40, 30, generator=g) < 0.3)
    k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(
        mode="values", rows_per_program=4, max_statements_per_function=8, streams=1)
    ).specialize(W)
    X, Y = torch.randn(30, 20), torch.empty(40, 20)
    sig = Signature("float32", "float32", "float32", ())
    v = k.variant(sig, 20, X.device, X.stride())
    calls, keys = [], []

    class Recording:
        enabled = True

        def __call__(self, fn, grid, args, opts, device, spec=None):
            calls.append((fn, args, spec))
    v.launcher = Recording()
    counting = lambda args: keys.append(spec_key(args)) or keys[-1]
    monkeypatch.setattr(launch, "spec_key", counting)
    launch.run(v, X, Y, (), sig)
    assert len(v.kernels) > 2 and len(calls) == len(v.kernels) and len(keys) == 1
    assert all(spec == keys[0] and args is calls[0][1] for _, args, spec in calls)


def test_launch_metadata_is_built_only_for_an_enter_hook(monkeypatch):
    """Triton's launch metadata feeds its launch-enter hook only: without a hook the direct
    launch passes None and skips building it; with one, the kernel's own metadata and the
    hooks reach the launch."""
    from triton import knobs
    from sparsert_triton.runtime import direct

    class Counting(_FakeKernel):
        def __init__(self):
            super().__init__()
            self.metas, self.seen = 0, []

        def launch_metadata(self, grid, stream, *args):
            self.metas += 1
            return {"grid": grid}

        def run(self, gx, gy, gz, stream, function, meta, launch_meta, enter, exit_, *args):
            self.seen.append((launch_meta, enter))

    k = Counting()
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", None)
    direct.run_compiled(direct.launches_of(((k, (2, 1, 1)),)), (torch.zeros(4),), 0)
    assert k.metas == 0 and k.seen == [(None, None)]

    def hook(metadata):
        return None
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", hook)
    direct.run_compiled(direct.launches_of(((k, (2, 1, 1)),)), (torch.zeros(4),), 0)
    assert k.metas == 1 and k.seen[-1] == ({"grid": (2, 1, 1)}, hook)


def test_empty_hook_chains_are_not_passed_to_the_launch(monkeypatch):
    """triton 3.6's launch hooks are chains, empty unless a profiler adds a hook: an empty
    chain is passed as None (no metadata built, no calls from the launcher), a chain with a
    hook as itself, with the kernel's metadata."""
    from triton import knobs
    from sparsert_triton.runtime import direct

    class Chain:
        def __init__(self, calls):
            self.calls = calls

        def __call__(self, *args):
            for c in self.calls:
                c(*args)

    class Counting(_FakeKernel):
        metas = 0

        def launch_metadata(self, grid, stream, *args):
            self.metas += 1
            return {"grid": grid}

        def run(self, gx, gy, gz, stream, function, meta, launch_meta, enter, exit_, *args):
            self.runs.append((launch_meta, enter, exit_))

    k = Counting()
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", Chain([]))
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", Chain([]))
    direct.run_compiled(direct.launches_of(((k, (1, 1, 1)),)), (5,), 0)
    assert k.metas == 0 and k.runs == [(None, None, None)]
    exit_chain = Chain([lambda meta: None])
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", exit_chain)
    direct.run_compiled(direct.launches_of(((k, (1, 1, 1)),)), (5,), 0)
    assert k.metas == 1 and k.runs[-1] == ({"grid": (1, 1, 1)}, None, exit_chain)


def test_the_c_launch_is_called_directly_only_with_the_known_layout(monkeypatch):
    """On triton 3.6 (``direct._C_LAUNCH``) a CUDA launcher of a kernel without scratch
    buffers is skipped for its compiled C ``launch``, with the arguments in the order the
    launcher would pass them; with scratch buffers, or another triton, the kernel's ``run``."""
    from sparsert_triton.runtime import direct

    class CudaLauncher:
        launch_cooperative_grid, launch_pdl = 0, 1

        def __init__(self, scratch):
            self.global_scratch_size, self.profile_scratch_size = scratch, 0
            self.direct, self.wrapped = [], []

        def launch(self, *args):
            self.direct.append(args)

        def __call__(self, *args):
            self.wrapped.append(args)

    class Kernel(_FakeKernel):
        def __init__(self, scratch):
            super().__init__()
            self.run = CudaLauncher(scratch)

    monkeypatch.setattr(direct, "_C_LAUNCH", True)
    plain, scratch = Kernel(0), Kernel(128)
    direct.run_compiled(direct.launches_of(((plain, (2, 3, 1)), (scratch, (4, 1, 1)))),
                        (10, 20), 7)
    assert plain.run.direct == [(2, 3, 1, 7, "fn", 0, 1, None, None, "meta", None, None, None,
                                 10, 20)] and not plain.run.wrapped
    assert scratch.run.wrapped == [(4, 1, 1, 7, "fn", "meta", None, None, None, 10, 20)]
    monkeypatch.setattr(direct, "_C_LAUNCH", False)
    direct.run_compiled(direct.launches_of(((plain, (2, 3, 1)),)), (10, 20), 7)
    assert len(plain.run.direct) == 1 and len(plain.run.wrapped) == 1
