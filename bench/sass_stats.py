"""The sm_90 machine code of a convolution schedule's kernels, read on the CPU (no GPU):
registers, spills, instructions by kind and code bytes per kernel and per row group.

    python -m bench.sass_stats --dlmc DIR --layer bottleneck_2_block_group2_1_1 [--batch 8]
        --schedules "Schedule(mode='values', rows_per_program=8, block_n=512, num_warps=16); ..."
        [--out bench/results/sass_stats.csv]

Each schedule is specialised to the DLMC layer at 90% (values drawn as in the benchmarks),
compiled for ``GPUTarget("cuda", 90, 32)`` with ``sparsert_triton.compile.precompile_variant``
and its cubin read with ``cuobjdump -res-usage`` and ``nvdisasm`` (shipped with Triton's
NVIDIA backend). What it is for: the unrolled kernels wait on instruction delivery (ncu,
bench/NOTES.md "Eighth session"), so a row group's code size (16 bytes per instruction)
against what an SM's instruction cache holds is a design quantity, and reading it costs no
device time.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

COLUMNS = ["layer", "batch", "schedule", "kernel", "groups", "registers", "spill_bytes",
           "instructions", "ffma", "ldg", "code_kb", "kb_per_group"]

_OPCODE = re.compile(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", re.M)


def tool(name: str) -> str:
    """Path of one of the CUDA binary tools bundled with Triton's NVIDIA backend."""
    import triton
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found beside Triton ({path})")
    return str(path)


def cubin_stats(cubin: bytes) -> dict:
    """Registers, spill bytes (local memory), instruction count, opcode counts and code bytes
    of one compiled kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([tool("cuobjdump"), "-res-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([tool("nvdisasm"), "-c", f.name], capture_output=True, text=True,
                              check=True).stdout
    usage = dict(re.findall(r"(REG|LOCAL|STACK):(\d+)", res))
    ops = Counter(_OPCODE.findall(sass))
    n = sum(ops.values())
    return {"registers": int(usage.get("REG", 0)), "spill_bytes": int(usage.get("LOCAL", 0)),
            "instructions": n, "ops": ops, "code_bytes": 16 * n}


def variant_stats(kernel, sig, N: int, x_strides=None, spatial=None) -> list:
    """One dict per compiled kernel of ``kernel``'s variant for a call of N columns: the
    :func:`cubin_stats` and the row groups it holds."""
    import torch
    from sparsert_triton.compile import precompile_variant
    v = kernel.variant(sig, N, torch.device("cpu"), x_strides, spatial)
    out = []
    for (fn, groups), compiled in zip(v.kernels, precompile_variant(v, sig)):
        s = cubin_stats(compiled.asm["cubin"])
        s["groups"] = int(groups)
        out.append(s)
    return out


def rows(name, batch, schedule, stats) -> list:
    out = []
    for i, s in enumerate(stats):
        kb = s["code_bytes"] / 1024
        out.append(dict(layer=name, batch=batch, schedule=repr(schedule), kernel=i,
                        groups=s["groups"], registers=s["registers"],
                        spill_bytes=s["spill_bytes"], instructions=s["instructions"],
                        ffma=s["ops"].get("FFMA", 0), ldg=s["ops"].get("LDG", 0),
                        code_kb=round(kb, 1),
                        kb_per_group=round(kb / s["groups"], 1) if s["groups"] else ""))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--layer", required=True, help="a DLMC ResNet-50 3x3 layer name")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--schedules", required=True, help="';'-separated Schedule(...) expressions")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    from bench.conv_bench import layer_kernel, layers, parse_schedules
    from bench.report import write_rows
    from sparsert_triton.plan import Signature
    found = [l for l in layers(Path(a.dlmc), "0.9") if l[0] == a.layer]
    if not found:
        raise SystemExit(f"--layer {a.layer!r}: no such 3x3 layer at 90% under {a.dlmc}")
    name, p, C_in, C_out, H, stride = found[0]
    sig = Signature("float32", "float32", "float32", ())
    Ho = (H + 2 - 3) // stride + 1
    out = []
    for s in parse_schedules(a.schedules):
        k = layer_kernel(p.with_values(seed=0), C_in, stride, s)
        r = rows(name, a.batch, s, variant_stats(k, sig, a.batch * Ho * Ho,
                                                 (C_in * H * H, H * H, H, 1), (H, H)))
        for row in r:
            print({c: row[c] for c in COLUMNS if c != "schedule"}, flush=True)
        out += r
    if a.out:
        write_rows(a.out, COLUMNS, out)


if __name__ == "__main__":
    main()
