"""What the convolution probes share: their command line, the DLMC 3x3 layers as GPU test
cases (weights, input, float64 ``F.conv2d`` reference), timing one kernel against the
reference, and the CSV they write (``layer,batch,system,median_us,rel_err``).

    run = ProbeRun(probe_args(__doc__).parse_args(argv))
    for case in run.cases():
        run.time(case, "my kernel", my_kernel)       # checked against case.ref, then timed
        run.time_schedules(case)                     # the library's --schedules beside it
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

COLUMNS = ["layer", "batch", "system", "median_us", "rel_err"]


def rel_err(Y, ref) -> float:
    """max |Y - ref| / max |ref| (in float64)."""
    return float((Y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def probe_args(doc: str) -> argparse.ArgumentParser:
    """The options every probe takes (a probe adds its own)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--dlmc", required=True, type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated layer-name substrings")
    ap.add_argument("--schedules", default="",
                    help="library schedules to time beside it, separated by ';'")
    ap.add_argument("--out", type=Path, default=None)
    return ap


@dataclass
class LayerCase:
    """One DLMC 3x3 layer at 90%, on the GPU: its pattern with values, dense weight
    (C_out, C_in, 3, 3), input X (batch, C_in, H, H) and the float64 reference output."""
    name: str
    weights: object
    C_in: int
    H: int
    stride: int
    W4: torch.Tensor
    X: torch.Tensor
    ref: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.X.numel() * 4 + self.ref.numel() * 4


class ProbeRun:
    """The layers a probe runs (``--only``), each kernel's check and time, and the CSV."""

    def __init__(self, args):
        self.args = args
        self.rows = []

    def emit(self, row: dict) -> None:
        """Print a row and write the CSV so far (``--out``): a call cut short keeps its rows."""
        from bench.report import write_rows
        self.rows.append(row)
        print(row, flush=True)
        if self.args.out:
            write_rows(self.args.out, COLUMNS, self.rows)

    def cases(self, stride_one_only: bool = False, device: str = "cuda"):
        """The DLMC 3x3 layers at 90% that ``--only`` names, as :class:`LayerCase` s."""
        from bench.conv_bench import layers
        from sparsert_triton.conv import conv_weight
        a = self.args
        for name, p, C_in, C_out, H, stride in layers(a.dlmc, "0.9"):
            if a.only and not any(o in name for o in a.only.split(",")):
                continue
            if stride_one_only and stride != 1:
                continue
            w = p.with_values(seed=0, dtype="float32")
            W4 = conv_weight(w, (C_in, 3, 3), order="hwc")[0].to_dense(torch.float32)
            W4 = W4.reshape(C_out, C_in, 3, 3).to(device)
            X = torch.randn(a.batch, C_in, H, H,
                            generator=torch.Generator().manual_seed(1)).to(device)
            ref = F.conv2d(X.double(), W4.double(), stride=stride, padding=1)
            yield LayerCase(name, w, C_in, H, stride, W4, X, ref)

    def time(self, case: LayerCase, system: str, kernel) -> dict:
        """Check ``kernel(X)`` against the reference, time it (CUDA graphs) and emit a row."""
        from bench.timing import time_system
        err = rel_err(kernel(case.X), case.ref)
        t = time_system(lambda x: (lambda: kernel(x)), case.X, case.nbytes).median_us
        row = dict(layer=case.name, batch=self.args.batch, system=system,
                   median_us=round(t, 2), rel_err=f"{err:.1e}")
        self.emit(row)
        return row

    def time_schedules(self, case: LayerCase) -> None:
        """The library's kernels for ``--schedules`` on the same layer, in the same process."""
        from bench.conv_bench import layer_kernel
        from dsl import Schedule
        for text in (s for s in self.args.schedules.split(";") if s.strip()):
            s = eval(text, {"Schedule": Schedule})
            self.time(case, repr(s), layer_kernel(case.weights, case.C_in, case.stride, s))
