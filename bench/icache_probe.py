"""How fast an SM is fed straight-line code: the instruction delivery the unrolled kernels
depend on, as a function of the code's size and of how often a program runs it again.

    python -m bench.icache_probe [--out bench/results/icache_probe_h100.csv]

ncu found the 16-warp unrolled convolution kernels waiting on instruction fetch more than on
anything else (``no_instruction``), and a program that ran its group's code (~4.8k
instructions, ~77 KB) on two column tiles took twice as long as on one: the second pass
was not served from an instruction cache. This probe measures that alone. Its kernel is
``n`` straight-line FMAs ``a[i % 16] += x[i % 4] * c_i`` (each one ``FFMA`` with an
immediate, as in the unrolled code: 16 bytes of code per instruction), the whole block run
``reps`` times in a loop, by one program of ``num_warps`` warps per SM, no memory traffic
inside the loop. At one issue per cycle per SM sub-partition, ``n * reps * num_warps / 4``
cycles is the floor; ``cycles_per_issue`` is the measured time over that floor (1.0: the
code arrives as fast as it is issued). Small blocks repeated show the cached rate, large
ones the streaming rate; ``reps = 1`` is what a program that runs its code once sees.
"""
from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

from sparsert_triton.compile import import_kernels

COLUMNS = ["fmas", "code_kb", "num_warps", "reps", "programs", "median_us", "cycles_per_issue",
           "clock_mhz"]

ACCUMULATORS = 16
INPUTS = 4


def coefficients(n: int, seed: int = 0):
    """The ``n`` FMA coefficients, small so the sums stay finite and exact enough to check."""
    rnd = random.Random(seed)
    return [rnd.random() * 1e-3 for _ in range(n)]


def probe_source(n: int) -> str:
    """Triton source of ``icache_kernel(X, Y, reps, BN)``: per lane ``x = X[lane]``,
    ``x_j = x * (j + 2)``, ``a_i = x + i + 1``; ``reps`` times the ``n`` statements
    ``a[i % 16] += x[i % 4] * c_i``; then ``Y[lane] = sum_i a_i``."""
    out = ["import triton", "import triton.language as tl", "", "",
           "@triton.jit", "def icache_kernel(X, Y, reps, BN: tl.constexpr):",
           "    lane = tl.program_id(0) * BN + tl.arange(0, BN)",
           "    x = tl.load(X + lane)"]
    out += [f"    x{j} = x * {j + 2}.0" for j in range(INPUTS)]
    out += [f"    a{i} = x + {i + 1}.0" for i in range(ACCUMULATORS)]
    out.append("    for r in range(reps):")
    for i, c in enumerate(coefficients(n)):
        a = i % ACCUMULATORS
        out.append(f"        a{a} = a{a} + x{i % INPUTS} * {c!r}")
    out.append("    tl.store(Y + lane, " + " + ".join(f"a{i}" for i in range(ACCUMULATORS)) + ")")
    return "\n".join(out) + "\n"


def reference(x: torch.Tensor, n: int, reps: int) -> torch.Tensor:
    """What the kernel computes, in float64."""
    x = x.double()
    xs = [x * (j + 2) for j in range(INPUTS)]
    acc = [x + i + 1 for i in range(ACCUMULATORS)]
    for _ in range(reps):
        for i, c in enumerate(coefficients(n)):
            acc[i % ACCUMULATORS] = acc[i % ACCUMULATORS] + xs[i % INPUTS] * c
    return sum(acc)


def load_kernel(n: int, folder: Path):
    """The probe kernel of ``n`` FMAs, written as a real module (Triton reads its source)."""
    path = folder / f"icache_probe_{n}.py"
    path.write_text(probe_source(n))
    return import_kernels(path, f"icache_probe_{n}").icache_kernel


def run(kernel, X: torch.Tensor, programs: int, BN: int, warps: int, reps: int) -> torch.Tensor:
    Y = torch.empty(programs * BN, dtype=torch.float32, device=X.device)
    kernel[(programs,)](X, Y, reps, BN=BN, num_warps=warps)
    return Y


def cycles_per_issue(median_us: float, clock_mhz: float, n: int, reps: int, warps: int) -> float:
    """Measured cycles over the one-issue-per-cycle floor of ``n * reps`` instructions for
    each of ``warps / 4`` warps on every SM sub-partition."""
    floor = n * reps * max(1.0, warps / 4)
    return median_us * clock_mhz / floor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/icache_probe_h100.csv")
    ap.add_argument("--sizes", default="512,1024,2048,4096,8192,16384",
                    help="','-separated FMA counts (16 bytes of code each)")
    ap.add_argument("--reps", default="1,4")
    ap.add_argument("--warps", default="16,4")
    a = ap.parse_args(argv)
    from bench.report import write_rows
    from bench.timing import graph_median_us, require_cuda
    require_cuda()
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    clock = getattr(props, "clock_rate", 0) / 1000 or 1980.0   # kHz -> MHz where reported
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in a.sizes.split(",")):
            kernel = load_kernel(n, Path(tmp))
            for warps in (int(v) for v in a.warps.split(",")):
                BN = 32 * warps
                X = torch.randn(sms * BN, device="cuda") * 0.1
                # checked on two programs' lanes (the reference is a Python loop)
                ref = reference(X[:2 * BN].cpu(), n, 1)
                got = run(kernel, X, sms, BN, warps, 1)[:2 * BN].cpu().double()
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-3)
                for reps in (int(v) for v in a.reps.split(",")):
                    us = graph_median_us([lambda: run(kernel, X, sms, BN, warps, reps)])
                    rows.append(dict(fmas=n, code_kb=round(n * 16 / 1024, 1), num_warps=warps,
                                     reps=reps, programs=sms, median_us=round(us, 2),
                                     cycles_per_issue=round(cycles_per_issue(
                                         us, clock, n, reps, warps), 3),
                                     clock_mhz=round(clock)))
                    print(rows[-1], flush=True)
            write_rows(a.out, COLUMNS, rows)     # after each size: a call cut short keeps them


if __name__ == "__main__":
    main()
