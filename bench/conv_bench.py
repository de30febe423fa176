"""Benchmark sparse 3x3 convolutions on the DLMC ResNet-50 layers against cuDNN.

    python -m bench.conv_bench --dlmc DIR [--sparsities 0.9] [--batches 1,8]
        [--dtypes float32,float16] [--out bench/results/conv_h100.csv] [--deadline-s 500]

Layers: every ``rn50/magnitude_pruning/<sparsity>/bottleneck_2_*`` matrix (the 3x3
convolutions, C_out x (C_in * 9), columns in DLMC's (dy, dx, c_in) order, see
``sparsert_triton.compiler.conv``). The DLMC ResNet-50 is v1 (the stride sits in the first
1x1 conv of a block) except in its projection blocks: there the first 1x1 conv runs at the input resolution
(``rn50_batchsizes.txt`` gives N = 3136 for group 2's) and the 3x3 conv has stride 2 in groups
2-4. So the 3x3 convs have padding 1, output size sqrt(N) (N from ``rn50_batchsizes.txt``) and
stride 2 in ``bottleneck_2_block_group_projection_block_group{2,3,4}``, 1 elsewhere. Weights and X are seeded normal draws in the case's dtype.

Systems: ``sparsert`` (direct sparse convolution, tuned over a few schedules), ``cudnn``
(``F.conv2d`` on the masked dense weight; fp32 with TF32 off, or the half dtype),
``cudnn_tf32`` (fp32 only), each the faster of cuDNN's heuristic algorithm and its benchmark
mode's choice, ``im2col_sparsert`` (``F.unfold`` then our sparse matmul).
Every result is checked against float64 ``F.conv2d`` before it is timed.
CSV columns: ``layer,sparsity,C_in,C_out,H,W,batch,stride,kh,kw,dtype,system,median_us,compile_s``;
every sparsert schedule tried goes to ``<out stem>_tune.jsonl`` (time or error).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import torch

from contextlib import contextmanager

from bench.dlmc_bench import read_batch_sizes
from bench.timing import require_cuda, time_system
from dsl import Schedule, conv2d
from dsl.schedule import as_schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.conv import conv_weight
from sparsert_triton.dlmc import read_smtx
from sparsert_triton.tune import CONV_CANDIDATES

COLUMNS = ["layer", "sparsity", "C_in", "C_out", "H", "W", "batch", "stride", "kh", "kw",
           "dtype", "system", "median_us", "compile_s"]
TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: the tuner's convolution candidates (each the fastest on at least one DLMC case on the
#: H100), then the kernel they replaced, for comparison: the tap-segment kernel (each row
#: walked one kernel tap at a time, the default before the padded input). Wider
#: exploration: ``--schedules``.
SCHEDULES = list(CONV_CANDIDATES) + [
    Schedule(mode="table", rows_per_program=1, chunk=4, block_n=64, num_warps=1,
             conv_input="segments")]


def layers(root: Path, sparsity: str):
    """(name, pattern, C_in, C_out, input H, stride) of the DLMC ResNet-50 3x3 convolutions."""
    sizes = read_batch_sizes(root)
    for path in _paths(root, sparsity):
        name = path.name.split(".smtx")[0]
        p = read_smtx(path)
        stride = 2 if "projection_block_group" in name and not name.endswith("group1") else 1
        Ho = int(round(math.sqrt(sizes[name])))
        yield name, p, p.K // 9, p.M, Ho * stride, stride


def _paths(root: Path, sparsity: str):
    """The files :func:`layers` reads, in its order."""
    return sorted((root / "rn50" / "magnitude_pruning" / sparsity).glob("bottleneck_2_*"))


def _rel_err(Y, ref):
    return ((Y.double().to(ref.device) - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@contextmanager
def cudnn_flags(**flags):
    """``torch.backends.cudnn`` flags set for the block, restored after: ``allow_tf32``
    (convolutions in TF32; cuDNN's flag is separate from cuBLAS's and on by default) and
    ``benchmark`` (each shape's algorithm picked by timing)."""
    old = {name: getattr(torch.backends.cudnn, name) for name in flags}
    for name, value in flags.items():
        setattr(torch.backends.cudnn, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(torch.backends.cudnn, name, value)


def layer_kernel(w, C_in: int, stride: int, schedule: Schedule):
    """The direct sparse convolution of a DLMC layer (hwc columns, 3x3, padding 1)."""
    return sparse_kernel(lambda W, X: conv2d(W, X, stride=stride, padding=1)).specialize(
        w, schedule=schedule, kernel_size=(C_in, 3, 3), order="hwc")


def _over_budget(s: Schedule, nnz: int, max_compile_s: float) -> bool:
    """Whether an unrolled build is estimated over the compile budget (~2 ms per nonzero)."""
    return _unrolled(s, nnz) and nnz * 2e-3 > max_compile_s


def _unrolled(s: Schedule, nnz: int) -> bool:
    """Whether the schedule builds unrolled code for a weight of ``nnz`` nonzeros ('auto'
    resolved as the kernel resolves it)."""
    from sparsert_triton.compiler.canonicalise import resolved_mode
    return resolved_mode(s, nnz) != "table"


def _gpu_time(make_call, X, nbytes) -> float:
    return time_system(make_call, X, nbytes).median_us


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_case(name, p, C_in, C_out, H, stride, batch, dtype, sparsity, max_compile_s, writer,
             device="cuda", timer=_gpu_time, log=None, schedules=None, channels_last=False,
             prebuilt=None):
    """Check and time every system on one layer; ``device``/``timer`` let a CPU test drive the
    same path under the interpreter. Every sparsert schedule tried is appended to ``log`` (a
    list of dicts) with its time, or its error. ``channels_last``: X (and cuDNN's weight) in
    NHWC memory order for every system. ``prebuilt``: ``{(layer, repr(schedule)): seconds}``
    of builds done beforehand (``build_all``), reported as the build time."""
    schedules = SCHEDULES if schedules is None else schedules
    dt = DTYPES[dtype]
    w = p.with_values(seed=0, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(batch, C_in, H, H, generator=g).to(device, dt)
    if channels_last:
        X = X.to(memory_format=torch.channels_last)
    W4 = conv_weight(w, (C_in, 3, 3), order="hwc")[0].to_dense(dt).reshape(C_out, C_in, 3, 3).to(device)
    if channels_last:
        W4 = W4.to(memory_format=torch.channels_last)
    ref = torch.nn.functional.conv2d(X.double(), W4.double(), None, stride, 1)
    Ho = ref.shape[2]
    nbytes = X.numel() * X.element_size() * 2 + W4.numel() * W4.element_size()
    base = dict(layer=name, sparsity=sparsity, C_in=C_in, C_out=C_out, H=H, W=H, batch=batch,
                stride=stride, kh=3, kw=3, dtype=dtype)
    results = {}

    def emit(system, make_call, time_it=timer, compile_s="", tol=TOL[dtype]):
        try:
            Y = make_call(X)()
            _sync(device)
            err = _rel_err(Y, ref)
            if not err <= tol:
                raise AssertionError(f"relative error {err:.2e}")
            t = time_it(make_call, X, nbytes)
            results[system] = t
            writer.writerow({**base, "system": system, "median_us": f"{t:.2f}",
                             "compile_s": compile_s})
        except Exception as e:   # recorded, not timed
            writer.writerow({**base, "system": system, "median_us": "",
                             "compile_s": f"FAILED: {type(e).__name__}: {str(e)[:100]}"})

    # cuDNN baselines: the faster of cuDNN's heuristic algorithm and the one its benchmark
    # mode picks by timing (either can win: benchmark mode was slower on some layers)
    def cudnn(tf32):
        def make(x):
            def f():
                with cudnn_flags(allow_tf32=tf32):
                    return torch.nn.functional.conv2d(x, W4, None, stride, 1)
            return f

        def best_timer(make_call, X, nbytes):
            times = []
            for bench_mode in (False, True):
                with cudnn_flags(benchmark=bench_mode):
                    make_call(X)()
                    times.append(timer(make_call, X, nbytes))
            return min(times)
        return make, best_timer
    emit("cudnn", *cudnn(False))
    if dtype == "float32":
        emit("cudnn_tf32", *cudnn(True), tol=5e-3)          # TF32's 10-bit mantissa
    # sparsert: the fastest of a few schedules (first-call build time reported)
    best = None
    for s in schedules:
        if _over_budget(s, w.nnz, max_compile_s):
            continue            # unrolled build estimated too slow for this budget
        k = layer_kernel(w, C_in, stride, s)
        entry = dict(layer=name, batch=batch, dtype=dtype, schedule=repr(s))
        t0 = time.time()
        try:
            Y = k(X)
            _sync(device)
            err = _rel_err(Y, ref)
            if not err <= TOL[dtype]:
                raise AssertionError(f"relative error {err:.2e}")
        except Exception as e:
            print(f"  {name} {s!r}: {type(e).__name__}: {str(e)[:120]}")
            if log is not None:
                log.append({**entry, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        build = time.time() - t0
        if prebuilt and (name, repr(s)) in prebuilt:
            build = prebuilt[(name, repr(s))]
        t = timer(lambda x, k=k: lambda: k(x), X, nbytes)
        if log is not None:
            log.append({**entry, "median_us": round(t, 2), "build_s": round(build, 2)})
        if best is None or t < best[0]:
            best = (t, k, build, s)
    if best is not None:
        print(f"  {name} b{batch} {dtype}: best {best[3]!r}")
        # checked again, not timed again: the search above already timed it
        emit("sparsert", lambda x, k=best[1]: lambda: k(x), time_it=lambda *_: best[0],
             compile_s=f"{best[2]:.2f}")
    # im2col + our sparse matmul (columns in PyTorch's unfold order, i.e. chw)
    wc = conv_weight(w, (C_in, 3, 3), order="hwc")[0]
    mm = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="table")).specialize(wc)

    def im2col_call(x):
        def f():
            cols = torch.nn.functional.unfold(x, 3, padding=1, stride=stride)  # B x C_in*9 x L
            Y = torch.stack([mm(cols[b]) for b in range(x.shape[0])])       # B x C_out x L
            return Y.reshape(x.shape[0], C_out, Ho, Ho)
        return f
    emit("im2col_sparsert", im2col_call)
    return results


def _build_one(path: str, name: str, C_in: int, H: int, stride: int, dtype: str, sched: str,
               device: str, batches=(1,)):
    """Worker of :func:`build_all`: specialise one layer to one schedule and run it once per
    batch size (Triton specialises integer arguments on divisibility by 16, so two batches
    can need two compilations of one source)."""
    s = parse_schedules(sched)[0]
    w = read_smtx(Path(path)).with_values(seed=0, dtype=dtype)
    k = layer_kernel(w, C_in, stride, s)
    t0 = time.time()
    for b in batches:
        k(torch.zeros(b, C_in, H, H, dtype=DTYPES[dtype], device=device))
    _sync(device)
    return name, sched, time.time() - t0


def build_all(cases, schedules, dtype: str, jobs: int, max_compile_s: float,
              device: str = "cuda", batches=(1,)) -> dict:
    """Build the unrolled schedules of every layer in ``jobs`` processes (one compile each, in
    parallel) before anything is timed; the timing run then loads them from the cache.
    Returns ``{(layer, repr(schedule)): build seconds}`` (one process's wall time per build)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    tasks = [(str(path), name, C_in, H, stride, dtype, repr(s), device, tuple(batches))
             for path, name, C_in, H, stride, nnz in cases for s in schedules
             if _unrolled(s, nnz) and not _over_budget(s, nnz, max_compile_s)]
    out = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for f in [pool.submit(_build_one, *t) for t in tasks]:
            try:
                name, sched, sec = f.result()
                out[(name, sched)] = round(sec, 2)
                print(f"  built {name} {sched}: {sec:.1f} s", flush=True)
            except Exception as e:      # the timing run builds (and reports) it itself
                print(f"  build failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
    return out


def capped_jobs(jobs: int, workers: int, cores: int) -> int:
    """Build processes such that ``jobs x workers`` (each build compiles its kernels in
    ``SPARSERT_COMPILE_WORKERS`` processes) stays within the host's cores: builds that contend
    for cores each took ~2.5x longer on the 16-core device host, and two device calls ran out
    of time building."""
    return max(1, min(jobs, cores // max(1, workers)))


def parse_schedules(text: str):
    """``Schedule(...)`` expressions (``repr(schedule)`` is valid DSL code), ';'-separated;
    those of earlier results read as saved schedules are (``as_schedule``: ``pad_input`` /
    ``tap_masks`` as ``conv_input``)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        s = eval(part, {"__builtins__": {}}, {"Schedule": lambda **fields: as_schedule(fields)})
        if not isinstance(s, Schedule):
            raise ValueError(f"--schedules: {part!r} is not a Schedule(...)")
        out.append(s)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dlmc", required=True, help="DLMC folder (rn50/magnitude_pruning/...)")
    ap.add_argument("--sparsities", default="0.9")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--out", default="bench/results/conv_h100.csv")
    ap.add_argument("--max-compile-s", type=float, default=10.0)
    ap.add_argument("--deadline-s", type=float, default=500.0)
    ap.add_argument("--only", default="",
                    help="','-separated substrings: the layers whose name holds one of them")
    ap.add_argument("--channels-last", action="store_true",
                    help="X (and cuDNN's weight) in NHWC memory order for every system")
    ap.add_argument("--jobs", type=int, default=1,
                    help="build the unrolled schedules in this many processes before timing")
    ap.add_argument("--schedules", default="",
                    help="';'-separated Schedule(...) expressions to try instead of the list")
    a = ap.parse_args(argv)
    schedules = parse_schedules(a.schedules) if a.schedules else None
    require_cuda()
    t_end = time.time() + a.deadline_s
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tune_path = Path(a.out).with_name(Path(a.out).stem + "_tune.jsonl")
    def wanted(name):
        return any(part in name for part in a.only.split(","))

    prebuilt = {}
    from sparsert_triton.compiler.compile import compile_workers
    jobs = capped_jobs(a.jobs, compile_workers(), os.cpu_count() or 1)
    if jobs < a.jobs:
        print(f"--jobs {a.jobs} -> {jobs} (x {compile_workers()} compile workers on "
              f"{os.cpu_count()} cores)", flush=True)
    if jobs > 1:
        cases = [(path, name, C_in, H, stride, p.nnz)
                 for sp in a.sparsities.split(",")
                 for path, (name, p, C_in, C_out, H, stride) in
                 zip(_paths(Path(a.dlmc), sp), layers(Path(a.dlmc), sp)) if wanted(name)]
        for dtype in a.dtypes.split(","):
            prebuilt.update(build_all(cases, schedules or SCHEDULES, dtype, jobs,
                                      a.max_compile_s,
                                      batches=[int(b) for b in a.batches.split(",")]))
    with open(a.out, "w", newline="") as f, open(tune_path, "w") as tune:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        # every layer in the first dtype before the next: a deadline cuts the later dtypes
        for dtype, sp in ((d, s) for d in a.dtypes.split(",") for s in a.sparsities.split(",")):
            for name, p, C_in, C_out, H, stride in layers(Path(a.dlmc), sp):
                if not wanted(name):
                    continue
                for batch in (int(b) for b in a.batches.split(",")):
                    if time.time() > t_end:
                        print("deadline reached")
                        return
                    log = []
                    r = run_case(name, p, C_in, C_out, H, stride, batch, dtype, sp,
                                 a.max_compile_s, writer, log=log, schedules=schedules,
                                 channels_last=a.channels_last, prebuilt=prebuilt)
                    f.flush()
                    tune.writelines(json.dumps(e) + "\n" for e in log)
                    tune.flush()
                    line = " ".join(f"{k} {v:.1f}us" for k, v in r.items())
                    print(f"{sp} {name} {C_in}->{C_out} {H}x{H}/{stride} b{batch} {dtype}: "
                          f"{line}", flush=True)


if __name__ == "__main__":
    main()
