"""Where the GPU's block scheduler puts the programs of a one-wave grid (GPU only).

The persistent unrolled kernels (``Schedule(persistent=c)``) give programs ``p`` and
``p + n_sm`` neighbouring runs of work on the assumption that a grid of ``c * n_sm`` programs,
all resident at once, is dealt round-robin over the SMs, so those programs share an SM and
its instruction cache. This reads each program's SM (``%smid``) and reports how often that
holds. The result changes speed only, never the output.

    python -m bench.sm_placement [--per-sm 1,2,4] [--warps 2,4,8] [--out FILE]
"""
from __future__ import annotations

import argparse
from collections import Counter

import torch
import triton
import triton.language as tl


@triton.jit
def _where(OUT, SPIN_NS: tl.constexpr):
    pid = tl.program_id(0)
    sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [pid], dtype=tl.int32,
                                   is_pure=False, pack=1)
    t0 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid], dtype=tl.int64,
                                   is_pure=False, pack=1)
    t = t0
    while t - t0 < SPIN_NS:      # stay resident, so the whole grid is placed at once
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid],
                                      dtype=tl.int64, is_pure=False, pack=1)
    tl.store(OUT + pid, sm)


def placement(per_sm: int, warps: int, spin_ns: int = 20000) -> dict:
    """Launch ``per_sm * n_sm`` programs of ``warps`` warps; summarise their SMs."""
    n_sm = torch.cuda.get_device_properties(0).multi_processor_count
    P = per_sm * n_sm
    out = torch.full((P,), -1, dtype=torch.int32, device="cuda")
    _where[(P,)](out, SPIN_NS=spin_ns, num_warps=warps)
    sm = out.cpu().tolist()
    loads = Counter(sm)
    pairs = [sm[p] == sm[p + n_sm] for p in range(P - n_sm)]
    return dict(per_sm=per_sm, warps=warps, programs=P, sms_used=len(loads),
                max_per_sm=max(loads.values()), min_per_sm=min(loads.values()),
                same_sm_as_p_plus_nsm=(sum(pairs) / len(pairs)) if pairs else float("nan"),
                first_wave_distinct=len(set(sm[:n_sm])) == n_sm,
                first_sms=sm[:12])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-sm", default="1,2,4")
    ap.add_argument("--warps", default="2,4,8")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    lines = []
    for c in (int(v) for v in a.per_sm.split(",")):
        for w in (int(v) for v in a.warps.split(",")):
            lines.append(str(placement(c, w)))
            print(lines[-1], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
