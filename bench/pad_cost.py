"""What the padded-input convolution kernel pays for its copy of X.

    python -m bench.pad_cost --dlmc DIR [--batches 1,8] [--out pad_cost.csv]

For each DLMC ResNet-50 3x3 layer (90%) and batch: the CUDA-graph median of the zero-padded
copy alone (``sparsert_triton.padding.zero_pad``, what ``pad_input`` adds to every call; and
``F.pad``, which it replaced) and of the whole padded sparse convolution (the table kernel with
``pad_input``, copy included; tap masks, the default since, need no copy), so
``copy_us / sparse_us`` is the copy's share.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.conv_bench import layer_kernel, layers
from bench.report import write_rows
from bench.timing import require_cuda, time_system
from dsl import Schedule
from sparsert_triton.padding import zero_pad

COLUMNS = ["layer", "C_in", "H", "batch", "stride", "copy_us", "torch_pad_us", "sparse_us",
           "copy_share"]


def measure(dlmc: Path, batches, device="cuda", timer=None) -> list:
    """One row per (layer, batch); ``timer(make_call, X, nbytes)`` -> microseconds (default:
    CUDA-graph medians). Each copy is checked against ``F.pad`` before it is timed."""
    timer = timer or (lambda make_call, X, nbytes: time_system(make_call, X, nbytes).median_us)
    rows = []
    for name, p, C_in, C_out, H, stride in layers(Path(dlmc), "0.9"):
        k = layer_kernel(p.with_values(seed=0), C_in, stride,
                         Schedule(mode="table", pad_input=True))
        for B in batches:
            X = torch.randn(B, C_in, H, H, device=device)
            if not torch.equal(zero_pad(X, 1, 1), torch.nn.functional.pad(X, (1, 1, 1, 1))):
                raise AssertionError(f"{name}: the padded copy differs from F.pad")
            nbytes = 2 * X.numel() * 4
            copy = timer(lambda x: lambda: zero_pad(x, 1, 1), X, nbytes)
            torch_pad = timer(lambda x: lambda: torch.nn.functional.pad(x, (1, 1, 1, 1)),
                              X, nbytes)
            k(X)                                    # build and compile outside the timing
            if not k.last_plan.pad_input:
                raise AssertionError(f"{name}: the plan does not pad the input")
            whole = timer(lambda x: lambda: k(x), X, nbytes)
            rows.append(dict(layer=name, C_in=C_in, H=H, batch=B, stride=stride,
                             copy_us=f"{copy:.2f}", torch_pad_us=f"{torch_pad:.2f}",
                             sparse_us=f"{whole:.2f}", copy_share=f"{copy / whole:.2f}"))
            print(f"{name} b{B}: copy {copy:.2f} us (F.pad {torch_pad:.2f}) of {whole:.2f} us",
                  flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlmc", required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out", default="bench/results/pad_cost_h100.csv")
    a = ap.parse_args(argv)
    require_cuda()
    rows = measure(Path(a.dlmc), [int(b) for b in a.batches.split(",")])
    write_rows(a.out, COLUMNS, rows)


if __name__ == "__main__":
    main()
