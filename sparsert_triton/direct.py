"""Direct launches: call a compiled kernel's own launcher, skipping ``JITFunction.run``.

``fn[grid](*args)`` binds the arguments, computes Triton's specialisation key, looks the
compiled kernel up and launches it: tens of microseconds of Python per call, more than the GPU
time of most sparse layers. Triton specialises a compiled kernel on each argument's type, each
integer's value (equal to 1, divisible by 16, 32- or 64-bit) and each pointer's 16-byte
alignment; :func:`spec_key` computes the same facts, so a kernel compiled for one call is
reused only for calls that Triton itself would send to that kernel. Anything else (a new key,
the interpreter, a Triton whose compiled kernels lack the launcher attributes) goes through
``fn[grid]``.
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
        self.stream_of = stream_of or (lambda device: torch.cuda.current_stream(device).cuda_stream)

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
        from triton import knobs
        stream = self.stream_of(device)
        g = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        kernel.run(g[0], g[1], g[2], stream, kernel.function, kernel.packed_metadata,
                   kernel.launch_metadata(g, stream, *args), knobs.runtime.launch_enter_hook,
                   knobs.runtime.launch_exit_hook, *args)
