"""End to end on the GPU: pruned ResNet-50 and BERT-base encoder layer, sparse vs dense.

    python -m bench.e2e [--quick] [--deadline-s 540] [--out bench/results/e2e_h100.csv]

Both models get random weights, magnitude-pruned to ``--sparsity`` (default 0.9) per layer.
The dense baseline is that pruned model run as is (dense kernels on the masked weights);
the sparse model is ``sparsify(model)`` of it: in ResNet-50 all 53 convolutions become
``SparseConv2d`` (direct sparse convolution, NCHW output; batch norms and pooling stay dense
PyTorch) and the fc a ``SparseLinear``; the Transformer layer's four Linears (QKV 2304x768,
output 768x768, FFN 3072x768 and 768x3072) become ``SparseLinear``. TF32 is off for both
matmuls and cuDNN convolutions, so the float32 dense baseline is true float32 like the
sparse kernels.

For every (model, batch, dense|sparse, eager|torch.compile(fullgraph=True)) it checks the
sparse output against the dense masked one, then times the forward pass (no_grad) two ways:
``launch``: back-to-back calls between CUDA events (includes Python/launch overhead, what an
eager user sees), and ``graph``: replays of a CUDA graph of one call (GPU time only). Median
of several windows. Results go to a CSV and a printed table; exit status 1 if any output
mismatches. ``--deadline-s`` skips (and lists) what would not finish in time.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from dsl import Schedule
from sparsert_triton.nn import sparsify

try:
    from bench.models import bert_layer, resnet50, weight_sparsity
except ImportError:      # run as a script: python bench/e2e.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.models import bert_layer, resnet50, weight_sparsity

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# max |sparse - dense| / max |dense| allowed (different accumulation orders)
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}
# rough seconds a configuration needs (compile dominates), to honour --deadline-s
COST_S = {("resnet50", "eager"): 60, ("resnet50", "compile"): 180,
          ("bert", "eager"): 10, ("bert", "compile"): 60}


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


def make_input(model: str, batch: int, a, device, dtype):
    g = torch.Generator(device=device).manual_seed(1234 + batch)
    if model == "resnet50":
        shape = (batch, 3, a.resolution, a.resolution)
    else:
        shape = (batch, a.seq, 768)
    return torch.randn(*shape, device=device, generator=g).to(dtype)


def build(model: str, a, device, dtype):
    if model == "resnet50":
        m = resnet50(a.sparsity, seed=0, device=device, resolution=a.resolution)
    else:
        m = bert_layer(a.sparsity, seed=0, device=device)
    return m.to(dtype).eval()


def time_launch(fn, x, iters: int, windows: int = 5) -> float:
    """Median over windows of the mean ms per call, back-to-back calls between CUDA events."""
    per = max(1, iters // windows)
    out = []
    for _ in range(windows):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(per):
            fn(x)
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / per)
    return statistics.median(out)


def time_graph(fn, x, iters: int, windows: int = 5) -> float:
    """Median over windows of the mean ms per replay of a CUDA graph of one call."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(x)
    return time_launch(lambda _: g.replay(), None, iters, windows)


def rel_err(y, ref) -> float:
    y, ref = y.float(), ref.float()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="bert,resnet50", help="comma list: bert, resnet50")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--modes", default="eager,compile", help="comma list: eager, compile")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--seq", type=int, default=128, help="Transformer sequence length")
    ap.add_argument("--resolution", type=int, default=224, help="ResNet-50 image size")
    ap.add_argument("--schedule-mode", default="auto", choices=["auto", "values", "indices", "table"])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--quick", action="store_true",
                    help="few timing iterations (20); for a smoke run")
    ap.add_argument("--deadline-s", type=float, default=540.0)
    ap.add_argument("--out", default="bench/results/e2e_h100.csv")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.e2e needs a CUDA GPU (sparse kernels run on CUDA tensors).", file=sys.stderr)
        return 2
    deadline = Deadline(a.deadline_s)
    iters = 20 if a.quick else a.iters
    device, dtype = torch.device("cuda"), DTYPES[a.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False      # dense fp32 baseline: true fp32, like ours
    torch.backends.cudnn.allow_tf32 = False
    schedule = None if a.schedule_mode == "auto" else Schedule(mode=a.schedule_mode)
    models = [m for m in a.models.split(",") if m]
    batches = [int(b) for b in a.batches.split(",") if b]
    modes = [m for m in a.modes.split(",") if m]
    gpu = torch.cuda.get_device_name()
    import triton
    print(f"device {gpu}; torch {torch.__version__}; triton {triton.__version__}; {a.dtype}; "
          f"sparsity {a.sparsity}; TF32 off (matmuls and cuDNN convolutions)")

    pairs = {}
    for name in models:
        t0 = time.time()
        dense = build(name, a, device, dtype)
        sparse, report = sparsify(dense, min_sparsity=min(0.5, a.sparsity), schedule=schedule,
                                  inplace=False)
        print(f"\n== {name}: built and pruned in {time.time() - t0:.1f} s, weight sparsity "
              f"{100 * weight_sparsity(dense):.1f}%")
        print(report)
        pairs[name] = (dense, sparse, len(report.replaced))

    rows, skipped, mismatches = [], [], []
    compiled = {}
    for mode in modes:
        for name in models:
            dense, sparse, n_sparse = pairs[name]
            if mode == "compile" and name not in compiled:
                compiled[name] = (torch.compile(dense, fullgraph=True, dynamic=False),
                                  torch.compile(sparse, fullgraph=True, dynamic=False))
            fd, fs = compiled[name] if mode == "compile" else (dense, sparse)
            for batch in batches:
                cost = COST_S[(name, mode)] * (0.5 if a.quick else 1.0)
                if deadline.left() < cost:
                    skipped.append(f"{name} batch {batch} {mode}")
                    continue
                x = make_input(name, batch, a, device, dtype)
                with torch.no_grad():
                    t0 = time.time()
                    yd = fd(x)
                    torch.cuda.synchronize()
                    first_dense = time.time() - t0
                    t0 = time.time()
                    ys = fs(x)
                    torch.cuda.synchronize()
                    first_sparse = time.time() - t0
                    err = rel_err(ys, yd)
                    ok = err <= TOLERANCE[a.dtype]
                    if not ok:
                        mismatches.append(f"{name} batch {batch} {mode}: rel err {err:.2e}")
                    for timing, timer in (("launch", time_launch), ("graph", time_graph)):
                        note = ""
                        try:
                            dms = timer(fd, x, iters)
                            sms = timer(fs, x, iters)
                        except Exception as e:   # e.g. a capture that fails: say so, go on
                            dms = sms = float("nan")
                            note = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                        rows.append(dict(device=gpu, model=name, batch=batch, dtype=a.dtype,
                                         mode=mode, timing=timing, dense_ms=dms, sparse_ms=sms,
                                         speedup=dms / sms if sms == sms and sms > 0 else float("nan"),
                                         rel_err=err, ok=ok, sparse_layers=n_sparse,
                                         first_call_dense_s=first_dense,
                                         first_call_sparse_s=first_sparse, note=note))
                        print(f"   {name:8s} b={batch:<2d} {mode:7s} {timing:6s} dense "
                              f"{dms:8.3f} ms  sparse {sms:8.3f} ms  x{dms / sms:5.2f}  "
                              f"err {err:.1e}{'' if ok else ' MISMATCH'} {note}", flush=True)
                torch.cuda.empty_cache()

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print_table(rows)
    if skipped:
        print(f"\nskipped (deadline {a.deadline_s:g} s): " + "; ".join(skipped))
    print(f"\nwrote {len(rows)} rows to {out}" if rows else "\nno rows measured")
    if mismatches:
        print("OUTPUT MISMATCH: " + "; ".join(mismatches))
        return 1
    return 0


def print_table(rows):
    if not rows:
        return
    head = ["model", "batch", "mode", "timing", "dense ms", "sparse ms", "speedup", "rel err"]
    body = [[r["model"], str(r["batch"]), r["mode"], r["timing"], f"{r['dense_ms']:.3f}",
             f"{r['sparse_ms']:.3f}", f"{r['speedup']:.2f}x", f"{r['rel_err']:.1e}"]
            for r in rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    line = "  ".join("{:>%d}" % w for w in widths)
    print("\n" + line.format(*head))
    for b in body:
        print(line.format(*b))


if __name__ == "__main__":
    sys.exit(main())
