"""The compiler pipeline of one variant, in order, in one place.

A kernel's program is traced and canonicalised once, when it is specialised to a weight
(``api.SparseKernel.specialize``: ``dsl.trace`` -> ``canonicalise.canonicalise_program``).
Each call signature then needs a variant, built by the stages below:

1. :func:`resolve` (canonicalise): the schedule becomes a device's :class:`Plan`
   (``plan_for``, ``with_device``), checked against the call's dtypes (``check_call``); a
   convolution's padded or masked input fixes the spatial size, X's strides and the table
   offsets.
2. :func:`build`: the cache key of everything that shapes the code; on a miss
   ``specialise`` (the weight's layout) -> ``lower`` (kernel IR) -> ``render`` (Triton
   source) -> ``cache.store`` (the source and the layout's arrays); on a hit the stored
   entry. ``api.Variant`` then imports the module (``compile.import_kernels``); Triton
   compiles it on the first launch.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from dsl import Schedule, ir

from ..runtime import cache
from .bitmap import Bitmap
from .blocks import Blocks
from .canonicalise import check_call, plan_for, with_device
from .lower import lower
from .plan import Plan, Signature
from .render import render
from .specialise import Table, specialise
from ..weights import SparseWeight


@dataclass(frozen=True)
class Target:
    """What a variant is built for: the device's plan, the capability (``"sm_90"``... or
    ``"interpreter"``), X's strides where the code bakes them in, a convolution input's
    spatial size where the code depends on it, and the table offsets of such an input."""
    plan: Plan
    capability: str
    baked_strides: Optional[Tuple[int, ...]]
    spatial: Optional[Tuple[int, int]]
    offsets: Optional[np.ndarray] = None

    def variant_key(self, sig: Signature) -> tuple:
        """The in-memory key of the compiled variant (everything but the program/weight)."""
        return (self.plan, sig, self.capability, self.baked_strides, self.spatial)


def resolve(schedule: Schedule, weight: SparseWeight, conv, sig: Signature, N: int,
            capability: str, x_strides=None, spatial=None) -> Target:
    """Stage 1: the plan of a call of N output columns on ``capability`` (``conv``: the
    convolution's ``ConvGeometry`` or None; ``spatial``: its input's (H, W) where known)."""
    fit = conv is not None and spatial is not None and conv.masks_fit(*spatial)
    plan = plan_for(schedule, weight, N, sig.x_dtype, conv=conv is not None,
                    tap_masks_fit=fit)
    plan = with_device(plan, capability)
    if conv is None and transposes_x(plan, N, x_strides, weight.K):
        plan = replace(plan, transpose_x=True)
    check_call(plan, sig)
    offsets = None
    if plan.pad_input or plan.tap_masks:
        if spatial is None:
            raise ValueError(f"a conv_input={plan.conv_input!r} "
                             "convolution kernel is specialised to its input's spatial "
                             "size: call it (or pass spatial=(H, W))")
        spatial = (int(spatial[0]), int(spatial[1]))
        if plan.pad_input:
            H, W = conv.padded_size(*spatial)          # strides of the padded copy
            offsets = conv.padded_offsets(*spatial)
        else:
            H, W = spatial                             # X made contiguous NCHW
            offsets = conv.masked_offsets(H, W)
        x_strides = (conv.C_in * H * W, H * W, W, 1)
    else:
        spatial = None
    baked = tuple(int(v) for v in x_strides) if plan.bake_strides and x_strides else None
    return Target(plan, capability, baked, spatial, offsets)


def transposes_x(plan: Plan, N: int, x_strides, K: int) -> bool:
    """Whether a matrix call of N columns with X (K x N) of strides ``x_strides`` runs the
    one-row table kernel that transposes X itself (``Plan.transpose_x``): X row-major (the
    (K, N) view of an (N, K) input, K-stride 1), which that kernel, reading whole rows of X
    along N per nonzero, would otherwise gather element by element; and the transposed X
    within the kernels' 32-bit offsets (K x N < 2**31; a larger one is read in place)."""
    return (plan.row_kernel and plan.split_k == 1 and N > 1 and x_strides is not None
            and int(x_strides[0]) == 1 and int(x_strides[1]) != 1 and K * N < 2**31)


def build(program: ir.Program, weight: SparseWeight, conv, sig: Signature,
          target: Target) -> Tuple[str, Path, dict]:
    """Stage 2: the variant's cache entry, ``(key, path of kernel.py, layout arrays)``:
    loaded where present, else specialise -> lower -> render -> store."""
    plan = target.plan
    key = cache.make_key(
        mask=weight.mask_digest(),
        values=weight.values_digest() if plan.mode == "values" else None,
        plan=plan.code_fields(), signature=repr(sig), program=repr(program.out),
        conv=repr(conv), x_strides=target.baked_strides, device=target.capability,
        spatial=target.spatial)
    hit = cache.load(key)
    if hit is not None:
        return key, hit[0], hit[1]
    layout = specialise(weight, plan, conv.kh * conv.kw if conv else 1,   # taps
                        target.offsets)
    lowered = lower(layout, plan, sig, program, conv, target.baked_strides,
                    (weight.M, weight.K))
    source = render(lowered, header=f"weight: {weight.M}x{weight.K}, "
                                    f"nnz {weight.nnz}, mask {weight.mask_digest()[:16]}")
    arrays = layout_arrays(layout)
    path = cache.store(key, source, arrays) / "kernel.py"
    _dump(key, program, plan, sig, layout, lowered, source)
    return key, path, arrays


def layout_arrays(layout) -> dict:
    """The host arrays a variant's launch needs from its layout (stored in the cache)."""
    if isinstance(layout, Bitmap):
        return {"bits": layout.bits, "woff": layout.woff, "roff": layout.roff,
                "tbase": layout.tbase, "value_index": layout.value_index,
                "k_tiles": np.asarray(layout.k_tiles, np.int64)}
    if isinstance(layout, Blocks):
        return {"rows": layout.rows, "base": layout.base, "steps": layout.steps,
                "cols": layout.cols, "value_index": layout.value_index}
    if isinstance(layout, Table):
        return {"rows": layout.rows, "starts": layout.starts, "lengths": layout.lengths,
                "cols": layout.cols, "value_index": layout.value_index,
                "groups": np.asarray(layout.groups, np.int64)}
    return {"pack_order": layout.pack_order,
            "kernel_groups": np.asarray([b - a for a, b in layout.kernels], np.int64)}


def _dump(key, program, plan, sig, layout, lowered, source):
    """``SPARSERT_DUMP=dir``: every stage's output of a newly built variant, one file each."""
    d = os.environ.get("SPARSERT_DUMP")
    if not d:
        return
    out = Path(d) / key
    out.mkdir(parents=True, exist_ok=True)
    (out / "1_trace.txt").write_text(repr(program) + "\n")
    (out / "2_canonical.txt").write_text(ir.to_source(program.out) + "\n"
                                        + json.dumps(asdict(plan), indent=1) + "\n" + repr(sig) + "\n")
    if isinstance(layout, Table):
        spec = f"table: {layout.groups} groups, {layout.cols.shape[0]} padded columns\n"
    elif isinstance(layout, Bitmap):
        spec = (f"bitmap: {layout.blocks} row blocks x {layout.k_tiles} K tiles, "
                f"{layout.value_index.shape[0]} values\n")
    elif isinstance(layout, Blocks):
        spec = (f"blocks: {layout.blocks} row blocks, steps {layout.steps.tolist()}, "
                f"{layout.cols.shape[0]} padded columns\n")
    else:
        spec = "".join(f"group {i}: rows {g.rows}, parts {[p.statements for p in g.parts]}\n"
                       for i, g in enumerate(layout.groups))
    (out / "3_specialised.txt").write_text(spec)
    (out / "4_lowered.txt").write_text("\n".join(repr(k) for k in lowered.kernels) + "\n")
    (out / "5_kernel.py").write_text(source)
