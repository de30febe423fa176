"""Direct launches: call a compiled kernel's own launcher, skipping ``JITFunction.run``.

``fn[grid](*args)`` binds the arguments, computes Triton's specialisation key, looks the
compiled kernel up and launches it: tens of microseconds of Python per call, more than the GPU
time of most sparse layers. Triton specialises a compiled kernel on each argument's type, each
integer's value (equal to 1, divisible by 16, 32- or 64-bit) and each pointer's 16-byte
alignment; :func:`spec_key` computes the same facts, so a kernel compiled for one call is
reused only for calls that Triton itself would send to that kernel. Anything else (a new key,
the interpreter, a Triton whose compiled kernels lack the launcher attributes) goes through
``fn[grid]``. A direct launch passes no launch metadata and no hooks where Triton's hook
chains are empty, and on triton 3.6 calls the compiled C launch itself
(:func:`launches_of`): ~4-8 us per launch on the H100 host against 8-17 us through the
compiled kernel's ``run`` with Triton's arguments (bench/NOTES.md, nineteenth session).
"""
from __future__ import annotations

import torch

_I32 = (-2**31, 2**31 - 1)


def spec_key(args) -> tuple:
    """The facts Triton specialises a compiled kernel on, per argument."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append((a.dtype, a.data_ptr() % 16 == 0))
        elif isinstance(a, bool):
            out.append(("b", a))
        elif isinstance(a, int):
            out.append(("i", a == 1, a % 16 == 0, _I32[0] <= a <= _I32[1]))
        else:
            out.append(type(a))
    return tuple(out)


def _launchable(kernel) -> bool:
    return all(hasattr(kernel, n) for n in ("run", "function", "packed_metadata",
                                            "launch_metadata"))


class Launcher:
    """Per-variant cache of compiled kernels, keyed by (kernel function, device, spec_key)."""

    def __init__(self, stream_of=None):
        self.kernels = {}
        self.enabled = True
        self.stream_of = stream_of or current_stream

    def compiled(self, fn, device: torch.device, spec):
        """The compiled kernel this launcher keeps for ``fn`` on ``device`` under ``spec``
        (a :func:`spec_key`), or None (not launched with those facts yet, or disabled)."""
        return self.kernels.get((fn, device, spec)) if self.enabled else None

    def __call__(self, fn, grid, args, opts, device: torch.device, spec=None):
        """Launch ``fn`` on ``grid``; ``spec``: ``spec_key(args)`` if the caller has it (one
        computation for the several kernels of a variant, which share their arguments)."""
        key = (fn, device, spec_key(args) if spec is None else spec)
        kernel = self.kernels.get(key) if self.enabled else None
        if kernel is None:
            kernel = fn[grid](*args, **opts)
            if self.enabled and _launchable(kernel):
                self.kernels[key] = kernel
            return
        g = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        run_compiled(launches_of(((kernel, g),)), args, self.stream_of(device))


#: the current stream's raw handle by device index (looked up once; absent in CPU builds)
_RAW_STREAM = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def current_stream(device: torch.device) -> int:
    """The raw handle of ``device``'s current CUDA stream (what Triton's own launch uses)."""
    if _RAW_STREAM is not None and device.index is not None:
        return _RAW_STREAM(device.index)
    return torch.cuda.current_stream(device).cuda_stream


def launches_of(pairs) -> tuple:
    """Prepared launches for :func:`run_compiled` from (compiled kernel, (gx, gy, gz)) pairs:
    ``(call, head, grid, kernel)``, the launch being ``call(gx, gy, gz, stream, *head,
    launch_metadata, enter_hook, exit_hook, *args)``. That is the kernel's own ``run`` with
    its function and packed metadata, except on triton 3.6, whose CUDA launcher's Python
    ``__call__`` only allocates the scratch buffers a kernel without any does not need and
    hands its arguments to the compiled C ``launch`` in a known order: there the C function
    is called with them directly."""
    out = []
    for kernel, g in pairs:
        run_ = kernel.run
        if _C_LAUNCH and type(run_).__name__ == "CudaLauncher" and hasattr(run_, "launch") \
                and getattr(run_, "global_scratch_size", 1) == 0 \
                and getattr(run_, "profile_scratch_size", 1) == 0:
            out.append((run_.launch, (kernel.function, run_.launch_cooperative_grid,
                                      run_.launch_pdl, None, None, kernel.packed_metadata),
                        g, kernel))
        else:
            out.append((run_, (kernel.function, kernel.packed_metadata), g, kernel))
    return tuple(out)


def active_hook(hook):
    """``hook``, or None where calling it would do nothing: None, or an empty chain (triton
    3.6's launch hooks are chains of hooks, empty unless a profiler adds one)."""
    if hook is None:
        return None
    calls = getattr(hook, "calls", None)
    return hook if not isinstance(calls, list) or calls else None


def run_compiled(launches, args, stream: int):
    """Launch compiled kernels on ``stream``: ``launches`` from :func:`launches_of`, sharing
    the arguments ``args`` (what ``fn[grid](*args)`` does once it has found the kernel, with
    Triton's launch hooks). Pointers may be passed as integer addresses (Triton's launcher
    takes an int as the address itself, without asking the driver about it)."""
    hooks = _RUNTIME or _runtime()
    enter = active_hook(hooks.launch_enter_hook)
    exit_ = active_hook(hooks.launch_exit_hook)
    for call, head, g, kernel in launches:
        # the launch metadata is built for the hooks only, and the hooks are passed only when
        # they would run something: two Python calls and an object less per launch
        meta = None if enter is None and exit_ is None else \
            kernel.launch_metadata(g, stream, *args)
        call(g[0], g[1], g[2], stream, *head, meta, enter, exit_, *args)


def _runtime():
    """``triton.knobs.runtime`` (imported on first use)."""
    global _RUNTIME
    if _RUNTIME is None:
        from triton import knobs
        _RUNTIME = knobs.runtime
    return _RUNTIME


_RUNTIME = None


def _c_launch_layout() -> bool:
    """Whether this triton's CUDA launcher has the 3.6 layout :func:`launches_of` calls into."""
    try:
        import triton
        return tuple(int(p) for p in triton.__version__.split(".")[:2]) == (3, 6)
    except (ImportError, ValueError):
        return False


_C_LAUNCH = _c_launch_layout()
