"""Compile: import a cached kernel module and JIT its kernels through Triton.

Triton compiles a kernel on its first launch; ``first_launch`` scopes Triton's binary cache
to ours for that call, so the binaries live beside the sources. ``precompile`` compiles the
kernels of a module ahead of time for a target (no GPU needed; used for compile-time
measurements and to fill the cache in parallel).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from ..runtime.cache import triton_cache_dir

_modules = {}
_lock = threading.Lock()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def import_kernels(path: Path, key: str):
    """Import the generated module once per process; return it."""
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            name = f"sparsert_kernels_{key}"
            spec = importlib.util.spec_from_file_location(name, str(path))
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            _modules[key] = mod
        return mod


def _import_compilable(path: Path, key: str):
    if interpreting():
        raise RuntimeError("precompile needs a process without TRITON_INTERPRET=1 (the "
                           "interpreter patches triton.language while kernels run)")
    return import_kernels(path, key)


@contextmanager
def triton_cache_scope():
    """Point Triton's binary cache at ours while a kernel compiles."""
    try:
        from triton import knobs
    except ImportError:  # pragma: no cover - older triton
        yield
        return
    with knobs.cache.scope():
        knobs.cache.dir = str(triton_cache_dir())
        yield


def precompile(path: Path, key: str, kernel_names, signature: dict, target=None, options=None,
               fast: bool = False, constants: dict = None):
    """Compile kernels of a generated module for ``target`` (default sm_90) without a GPU.

    ``signature`` maps parameter names to Triton types (e.g. ``{"X": "*fp32", "N": "i32"}``);
    ``constants`` names parameters compiled as constants, as Triton's launch specialises an
    integer argument equal to 1 (e.g. ``{"N": 1}``). Pointers are marked 16-byte aligned, as
    Triton's launch specialises a torch tensor's (so vector loads show as they will run).
    Returns the compiled kernels.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    mod = _import_compilable(path, key)
    target = target or GPUTarget("cuda", 90, 32)
    out = []
    from .fastpasses import fast_pipeline
    with triton_cache_scope(), fast_pipeline(fast):
        for name in kernel_names:
            fn = getattr(mod, name)
            consts = {p: v for p, v in (constants or {}).items() if p in fn.arg_names}
            sig = {p: "constexpr" if p in consts else signature[p] for p in fn.arg_names}
            aligned = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.arg_names)
                       if sig[p].startswith("*")}
            out.append(triton.compile(ASTSource(fn, sig, consts, aligned), target=target,
                                      options=options or {}))
    return out


_TT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def triton_signature(sig) -> dict:
    """Triton parameter types of a variant's kernels (operands assumed in X's dtype)."""
    x, w, y = (_TT[d] for d in (sig.x_dtype, sig.w_dtype, sig.out_dtype))
    types = {"X": f"*{x}", "V": f"*{w}", "VALS": f"*{w}", "Y": f"*{y}", "ROWS": "*i32",
             "STARTS": "*i32", "LENGTHS": "*i32", "COLS": "*i32", "NZ": "*i64", "N": "i32",
             "WS": "*fp64" if sig.acc_dtype == "float64" else "*fp32", "CNT": "*i32",
             "ZB": f"*{x}", "BASE": "*i32", "STEPS": "*i32",
             "BITS": "*i32", "WOFF": "*u8", "ROFF": "*i16", "TBASE": "*i32", "SCR": f"*{x}",
             "XT": f"*{x}"}
    for s in ("sxk", "sxn", "sym", "syn", "sxb", "sxc", "sxh", "sxw", "IH", "IW", "syb", "syh",
              "syw", "Wo", "HWo"):
        types[s] = "i32"
    from .render import operand_names
    for name, kind in sig.operand_kinds:
        for conv in (False, True):      # (a convolution's full operands: two more strides)
            p, *strides = operand_names(name, kind, conv)
            types[p] = (("fp64" if sig.acc_dtype == "float64" else "fp32") if kind == "number"
                        else f"*{x}")
            types.update((s, "i32") for s in strides)
    return types


def precompile_variant(variant, sig, target=None, fast: bool = True, constants: dict = None):
    """Compile every kernel of a built variant for ``target`` (default sm_90) on any machine,
    those of a captured call after the others (``constants``: see :func:`precompile`)."""
    names = [fn.fn.__name__ if hasattr(fn, "fn") else fn.__name__
             for fn, _ in variant.kernels + (variant.captured or [])]
    opts = {"num_warps": variant.plan.num_warps, "num_stages": variant.plan.num_stages,
            "enable_fp_fusion": True}
    from .fastpasses import applies
    types = triton_signature(sig)
    if variant.plan.mode == "blocks":     # 16-bit column indices where K fits
        types["COLS"] = "*i16" if variant.cols_dtype == "int16" else "*i32"
    return precompile(variant.path, variant.key, names, types, target, opts,
                      fast=fast and applies(variant.plan), constants=constants)


# ---------------------------------------------------------------- parallel first compile

def compile_workers() -> int:
    """Worker processes for a variant's first compile (``SPARSERT_COMPILE_WORKERS``; 0: off)."""
    try:
        return max(0, int(os.environ.get("SPARSERT_COMPILE_WORKERS", "0")))
    except ValueError:
        raise ValueError("SPARSERT_COMPILE_WORKERS must be an integer") from None


def mock_args(args) -> list:
    """A launch's arguments as ``JITFunction.warmup`` takes them: tensors become their dtype
    (aligned mock pointers), numbers stay (Triton specialises on their values)."""
    import torch
    return [a.dtype if isinstance(a, torch.Tensor) else a for a in args]


def _warm_one(path: str, key: str, name: str, args, grid, opts: dict, cache_dir: str,
              fast: bool):
    """In a worker: compile one kernel into the shared Triton cache without launching it."""
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    from .fastpasses import fast_pipeline
    mod = import_kernels(Path(path), key)
    with fast_pipeline(fast):
        getattr(mod, name).warmup(*args, grid=grid, **opts)


def warm_in_parallel(variant, launches, opts: dict, fast: bool, workers: int):
    """Compile the kernels of ``launches`` ((kernel, grid, args) triples) in ``workers``
    processes, so the launches that follow load them from the cache. A failure only warns:
    the launch then compiles the kernel itself."""
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    jobs = [(str(variant.path), variant.key, getattr(fn, "__name__", None) or fn.fn.__name__,
             mock_args(args), grid, opts, str(triton_cache_dir()), fast)
            for fn, grid, args in launches]
    try:
        with ProcessPoolExecutor(min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in [pool.submit(_warm_one, *job) for job in jobs]:
                f.result()
    except Exception as e:  # the serial compile in the launch still runs
        warnings.warn(f"parallel compile failed ({type(e).__name__}: {e}); compiling serially")
