"""The ``sparsert`` command line (also ``python -m sparsert_triton``).

Subcommands::

    sparsert inspect PATH [--layer NAME] [--plot FILE.png]   shape, nnz, row-length histogram
    sparsert emit PATH [schedule options] [--epilogue E] [-o FILE]   the generated Triton source
    sparsert bench PATH [--n N] [--dtype D] [schedule options]    time against torch baselines (GPU)
    sparsert tune PATH [--n N] [--dtype D]                          search schedules (GPU)
    sparsert cache list|clear                                       the on-disk kernel cache

A matrix PATH is a DLMC pattern (``.smtx``, ``.smtx.gz``; values drawn from a seeded normal
distribution), a dense ``.npy`` array (zeros are the mask; a boolean array is a pure mask), or a
``.pt``/``.pth`` file holding a tensor or a state_dict (``--layer`` picks the weight; a
convolution weight C_out x C_in x kh x kw is flattened to C_out x C_in*kh*kw, the GEMM a direct
sparse convolution computes). Bad input ends with exit status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .matrix_io import DTYPES, CliError, Matrix, load_matrix, suffix

PROG = "sparsert"


# ------------------------------------------------------------------ epilogues

def _epilogues():
    """Named DSL programs for ``emit``/``bench`` (``W @ X`` and common fused epilogues)."""
    from dsl import gelu, relu, sigmoid, silu

    def plain(W, X):
        return W @ X

    def bias(W, X, bias):
        return W @ X + bias

    def relu_only(W, X):
        return relu(W @ X)

    def bias_relu(W, X, bias):
        return relu(W @ X + bias)

    def bias_gelu(W, X, bias):
        return gelu(W @ X + bias)

    def bias_silu(W, X, bias):
        return silu(W @ X + bias)

    def bias_sigmoid(W, X, bias):
        return sigmoid(W @ X + bias)

    relu_only.__name__ = "relu"
    return {"plain": plain, "bias": bias, "relu": relu_only, "bias_relu": bias_relu,
            "bias_gelu": bias_gelu, "bias_silu": bias_silu, "bias_sigmoid": bias_sigmoid}


EPILOGUE_NAMES = ("plain", "bias", "relu", "bias_relu", "bias_gelu", "bias_silu", "bias_sigmoid")


# ------------------------------------------------------------------ loading matrices

def text_histogram(values, bins: int = 10, width: int = 40) -> list:
    """Lines of a text histogram of integer ``values`` in at most ``bins`` integer bins."""
    values = np.asarray(values, np.int64)
    if values.size == 0:
        return ["  (no rows)"]
    lo, hi = int(values.min()), int(values.max())
    step = max(1, -(-(hi - lo + 1) // bins))
    edges = np.arange(lo, hi + step + 1, step)
    counts, _ = np.histogram(values, bins=edges)
    top = max(1, counts.max())
    label_w = len(str(hi))
    out = []
    for a, c in zip(edges[:-1], counts):
        b = min(a + step - 1, hi)
        label = f"{a:>{label_w}}" + (f"-{b:<{label_w}}" if b != a else " " * (label_w + 1))
        out.append(f"  {label} | {'#' * int(round(width * c / top)):<{width}} {c}")
    return out


def describe(m: Matrix, n: int = 128) -> list:
    """The lines ``inspect`` prints for one matrix."""
    from dsl import Schedule
    from .compiler.canonicalise import plan_for
    w = m.weight
    L = w.row_nnz
    col_used = np.zeros(w.K, bool)
    col_used[w.indices] = True
    lines = [
        f"file        {m.path}",
        f"contents    {m.description}",
        f"shape       {w.M} x {w.K}",
        f"nnz         {w.nnz}",
        f"density     {100 * w.density:.2f}%   (sparsity {100 * (1 - w.density):.2f}%)",
        f"row nnz     min {L.min()}  median {np.median(L):g}  mean {L.mean():.2f}  max {L.max()}"
        f"  std {L.std():.2f}",
        f"empty       {int((L == 0).sum())} rows, {int((~col_used).sum())} columns",
    ]
    plan = plan_for(Schedule(), w, n, w.dtype)
    lines.append(f"default     for N={n}: {plan.to_schedule(conv=False)!r}")
    lines.append("nonzeros per row:")
    lines += text_histogram(L)
    return lines


def _matrix_files(root: Path) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file() and suffix(p) in (".smtx", ".smtx.gz", ".npy"))


def cmd_inspect(args) -> int:
    path = Path(args.path)
    if path.is_dir():
        return _inspect_dir(path, args)
    m = load_matrix(path, args.layer, args.seed)
    print("\n".join(describe(m, args.n)))
    if args.plot:
        _save_plot(m, Path(args.plot))
        print(f"plot        {args.plot}")
    return 0


def _inspect_dir(root: Path, args) -> int:
    from tqdm import tqdm
    files = _matrix_files(root)
    if not files:
        raise CliError(f"{root}: no .smtx, .smtx.gz or .npy files in this directory")
    if args.layer or args.plot:
        raise CliError("--layer and --plot apply to a single file, not a directory")
    width = max(6, max(len(str(p.relative_to(root))) for p in files))
    print(f"{'matrix':<{width}} {'M':>6} {'K':>6} {'nnz':>9} {'sparsity':>8}  row nnz min/mean/max")
    for p in tqdm(files, desc="reading", unit="file", file=sys.stderr, disable=None):
        try:
            w = load_matrix(p, None, args.seed).weight
        except CliError as e:
            print(f"{str(p.relative_to(root)):<{width}} unreadable: {e}")
            continue
        L = w.row_nnz
        print(f"{str(p.relative_to(root)):<{width}} {w.M:>6} {w.K:>6} {w.nnz:>9} "
              f"{100 * (1 - w.density):>7.2f}%  {L.min()}/{L.mean():.1f}/{L.max()}")
    return 0


def _save_plot(m: Matrix, out: Path):
    from . import viz
    plt = viz._plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    viz.spy(m.weight, ax=a, title=f"{m.path.name}: {m.weight.M} x {m.weight.K}")
    viz.row_length_hist(m.weight, ax=b)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as e:
        raise CliError(f"--plot {out}: cannot save: {e}") from None
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ schedules

def _int_or_auto(s: str):
    if s == "auto":
        return s
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_int(s: str) -> int:
    v = _int_or_auto(s)
    if v == "auto":
        raise argparse.ArgumentTypeError("expected a positive integer, got 'auto'")
    return v


def _add_schedule_options(p):
    from dsl.schedule import AUTO, CONV_INPUTS, MODES, ROW_ORDERS
    g = p.add_argument_group("schedule (every field defaults to 'auto': the heuristic plan)")
    g.add_argument("--mode", choices=(AUTO,) + MODES,
                   default="auto",
                   help="values: weights and columns baked in as literals (SparseRT); indices: "
                        "columns baked in, values read from a buffer (new values reuse the "
                        "kernel); table: a loop over host-built buffers (code size independent "
                        "of nnz); blocks: row blocks of padded nonzero lists with 16-bit "
                        "columns (W @ X of few columns); bitmap: a bit per weight position "
                        "plus each tile's packed values, decoded in registers (W @ X)")
    g.add_argument("--rows-per-program", type=_int_or_auto, default="auto", metavar="R",
                   help="output rows computed by one program (each loaded X row feeds all R)")
    g.add_argument("--block-n", type=_int_or_auto, default="auto", metavar="B",
                   help="columns of X and Y per program (a power of two)")
    g.add_argument("--row-order", choices=(AUTO,) + ROW_ORDERS, default="auto",
                   help="how rows are grouped: matrix order, by length, or clustered by shared "
                        "columns")
    g.add_argument("--chunk", type=_int_or_auto, default="auto",
                   help="table mode: nonzero columns per loop step (a power of two)")
    g.add_argument("--split-k", type=_positive_int, default=1, metavar="S",
                   help="table mode, one row per program: walk each row in S parts side by "
                        "side, one warp each, summed at the end; blocks and bitmap modes: each "
                        "row block's steps over S programs (default 1)")
    for flag, help_text in ON_OFF_OPTIONS:
        g.add_argument(f"--{flag}", choices=("auto", "on", "off"), default="auto", help=help_text)
    g.add_argument("--conv-input", choices=(AUTO,) + CONV_INPUTS,
                   default="auto",
                   help="convolutions: how X is read. padded: a zero-padded copy, each nonzero "
                        "one offset into it (one-row table kernel, unrolled modes); masked: X "
                        "itself, the table's entries carry their tap's bit, loads masked by "
                        "each lane's in-image bits (unrolled: masked loads); segments: X "
                        "itself, the one-row kernel walks each row one kernel tap at a time "
                        "(auto: masked where tap masks serve the input, over 1024 programs, "
                        "else padded; masked loads in the unrolled modes)")
    g.add_argument("--allow-tf32", action="store_true", help="let float32 tl.dot use TF32")
    g.add_argument("--num-warps", type=_int_or_auto, default="auto", help="Triton num_warps")
    from dsl import Schedule
    g.add_argument("--max-statements", type=_positive_int, default=None, metavar="S",
                   help="unrolled modes: statements per generated function (default "
                        f"{Schedule().max_statements_per_function})")
    g.add_argument("--streams", type=_int_or_auto, default="auto", metavar="S",
                   help="unrolled modes cut into several kernels: run up to S of them side by "
                        "side on CUDA streams (auto: 8; 1: in sequence)")


#: Schedule switches given as --flag auto|on|off: (flag, help); the field is the flag's
#: underscore form
ON_OFF_OPTIONS = [
    ("use-dot", "table mode: multiply blocks with tl.dot (tensor cores; R, chunk, block-n >= 16)"),
    ("prefetch-tail", "with prefetch: a segment's last len %% chunk nonzeros as independent "
                      "masked loads of the prefetched columns (auto: on with conv-input padded "
                      "or masked, and with prefetch-x's W @ X default)"),
    ("prefetch-x", "with prefetch-tail: also load the next chunk's X rows a step ahead (two "
                   "chunks per step on two register sets; auto: on, with chunks of 16, in a "
                   "convolution's one-row kernel of <= 1024 programs (padded input) and in "
                   "W @ X's of <= 2048 programs whose rows average >= 16 nonzeros (fp32; half "
                   "precision with N <= 64))"),
]


def schedule_from_args(args):
    from dsl import Schedule
    on_off = {"auto": "auto", "on": True, "off": False}
    switches = {flag.replace("-", "_"): on_off[getattr(args, flag.replace("-", "_"))]
                for flag, _ in ON_OFF_OPTIONS}
    bounds = {}
    if args.max_statements is not None:
        bounds["max_statements_per_function"] = args.max_statements
    return Schedule(mode=args.mode, rows_per_program=args.rows_per_program, block_n=args.block_n,
                    row_order=args.row_order, chunk=args.chunk, split_k=args.split_k,
                    streams=args.streams, conv_input=args.conv_input,
                    allow_tf32=args.allow_tf32,
                    num_warps=args.num_warps, **switches, **bounds)


def _kernel(m: Matrix, args):
    from . import sparse_kernel
    fn = _epilogues()[args.epilogue]
    return sparse_kernel(fn, schedule=schedule_from_args(args)).specialize(m.weight)


# ------------------------------------------------------------------ emit

def cmd_emit(args) -> int:
    from . import Signature
    from .compiler.canonicalise import output_dtype
    import torch
    m = load_matrix(args.path, args.layer, args.seed, args.dtype)
    k = _kernel(m, args)
    d = m.weight.dtype
    sig = Signature(d, d, output_dtype(k.program, d), tuple((n, "row") for n in k.program.operands))
    variant = k.variant(sig, args.n, torch.device("cpu"))
    source = variant.source
    if args.output:
        try:
            Path(args.output).write_text(source)
        except OSError as e:
            raise CliError(f"-o {args.output}: cannot write: {e.strerror or e}") from None
        print(f"wrote {args.output}: {source.count(chr(10))} lines, {len(variant.kernels)} "
              f"kernel(s), {variant.plan.to_schedule(conv=False)!r}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return 0


# ------------------------------------------------------------------ bench

def _need_gpu(what: str):
    import torch
    from .compiler.compile import interpreting
    if not torch.cuda.is_available():
        raise CliError(f"{what} needs a CUDA GPU")
    if interpreting():
        raise CliError(f"{what} needs a CUDA GPU run: unset TRITON_INTERPRET")


BENCH_COLUMNS = ("matrix", "model", "sparsity", "M", "K", "N", "nnz", "dtype", "system",
                 "median_us", "eager_us", "compile_s", "schedule")


def cmd_bench(args) -> int:
    _need_gpu("bench")
    import time
    import warnings
    import torch
    import triton.testing
    from tqdm import tqdm
    from .testing import assert_matches
    from .weights import TORCH_DTYPES
    m = load_matrix(args.path, args.layer, args.seed, args.dtype)
    w, N, dt = m.weight, args.n, TORCH_DTYPES[args.dtype]
    args.epilogue = "plain"
    k = _kernel(m, args)
    if args.tuned:
        from . import sparse_kernel
        tune = _tune_module()
        X0 = torch.randn(w.K, N, generator=torch.Generator().manual_seed(args.seed + 1))
        best, _ = tune.tune(k, w, X0.to(dt).cuda(), budget_s=args.budget_s)
        k = sparse_kernel(_epilogues()["plain"], schedule=best).specialize(w)
    g = torch.Generator().manual_seed(args.seed + 1)
    X = torch.randn(w.K, N, generator=g).to(dt).cuda()
    Wd = w.to_dense(dt).cuda()
    with warnings.catch_warnings():       # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        Wcsr = Wd.to_sparse_csr()
    Yk = torch.empty(w.M, N, dtype=dt, device="cuda")
    systems = {"sparsert": lambda: k(X, out=Yk), "dense": lambda: Wd @ X}
    if args.dtype == "float32":
        systems["dense_tf32"] = lambda: Wd @ X
    systems["cusparse"] = lambda: Wcsr @ X
    results, compile_s = {}, None
    bar = tqdm(total=2 + len(systems), desc="bench", file=sys.stderr, disable=None)
    bar.set_postfix_str("compiling")
    t0 = time.perf_counter()
    Y = k(X)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    bar.update()
    bar.set_postfix_str("checking")
    try:
        assert_matches(Y, k.reference(X.cpu()), w.to_dense(), X, args.dtype)
    except AssertionError as e:
        bar.close()
        raise CliError(f"sparsert result does not match torch: {e}") from None
    bar.update()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, fn in systems.items():
            bar.set_postfix_str(name)
            torch.backends.cuda.matmul.allow_tf32 = name == "dense_tf32"
            fn()
            eager = triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms,
                                            return_mode="median") * 1e3
            results[name] = (graph_median_us(fn), eager)
            bar.update()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        bar.close()
    plan = k.last_plan
    flops = 2.0 * w.nnz * N
    print(f"matrix   {m.path}: {w.M} x {w.K}, nnz {w.nnz} ({100 * (1 - w.density):.1f}% sparse), "
          f"N = {N}, {args.dtype}, {torch.cuda.get_device_name()}")
    print(f"plan     {plan.to_schedule(conv=False)!r}")
    print(f"compile  {compile_s:.2f} s (first call, including the kernel cache lookup)")
    print("times    GPU: median per call over CUDA-graph replays; eager: do_bench median of "
          "single calls from Python (launch overhead and a cold L2 included)")
    ours = results["sparsert"][0]
    print(f"{'system':<12} {'GPU us':>9} {'eager us':>9} {'GFLOP/s':>9} {'sparsert speedup':>17}")
    for name, (gpu, eager) in results.items():
        g = f"{gpu:>9.2f}" if gpu is not None else f"{'-':>9}"
        rate = f"{flops / gpu / 1e3:>9.1f}" if gpu else f"{'-':>9}"
        speed = f"{gpu / ours:>16.2f}x" if gpu and ours else f"{'-':>17}"
        print(f"{name:<12} {g} {eager:>9.2f} {rate} {speed}")
    if args.csv:
        _append_csv(Path(args.csv), m, N, args.dtype, results, compile_s, plan)
        print(f"appended {len(results)} rows to {args.csv}")
    return 0


def graph_median_us(fn):
    """GPU microseconds per call of ``fn`` from CUDA-graph replays (:mod:`.timing`); None when
    the function cannot be captured."""
    import torch
    from .runtime.timing import graph_median_us as median
    try:
        return median([fn], replays=15)
    except RuntimeError:
        torch.cuda.synchronize()
        return None

def _append_csv(path: Path, m: Matrix, N: int, dtype: str, results: dict, compile_s, plan):
    import csv
    w = m.weight
    new = not path.exists()
    try:
        with open(path, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=BENCH_COLUMNS)
            if new:
                out.writeheader()
            for name, (us, eager) in results.items():
                ours = name == "sparsert"
                out.writerow({"matrix": m.path.name, "model": "", "sparsity": f"{1 - w.density:.4f}",
                              "M": w.M, "K": w.K, "N": N, "nnz": w.nnz, "dtype": dtype,
                              "system": name, "median_us": f"{us:.3f}" if us is not None else "",
                              "eager_us": f"{eager:.3f}",
                              "compile_s": f"{compile_s:.3f}" if ours else "",
                              "schedule": repr(plan.to_schedule(conv=False)) if ours else ""})
    except OSError as e:
        raise CliError(f"--csv {path}: cannot write: {e.strerror or e}") from None


# ------------------------------------------------------------------ tune

def _tune_module():
    try:
        from . import tune
    except ImportError:
        raise CliError("the autotuner (sparsert_triton.tune) is not available in this "
                       "installation") from None
    return tune


def _operands(program, M: int, device, dtype, seed: int) -> list:
    """Random per-row operands (a bias) for the named epilogues."""
    import torch
    g = torch.Generator().manual_seed(seed + 2)
    return [torch.randn(M, generator=g).to(dtype).to(device) for _ in program.operands]


def cmd_tune(args) -> int:
    _need_gpu("tune")
    import torch
    from . import sparse_kernel
    from .weights import TORCH_DTYPES
    tune = _tune_module()
    m = load_matrix(args.path, args.layer, args.seed, args.dtype)
    w, dt = m.weight, TORCH_DTYPES[args.dtype]
    program = sparse_kernel(_epilogues()[args.epilogue])
    g = torch.Generator().manual_seed(args.seed + 1)
    X = torch.randn(w.K, args.n, generator=g).to(dt).cuda()
    ops = _operands(program.program, w.M, X.device, dt, args.seed)
    best, results = tune.tune(program, w, X, *ops, budget_s=args.budget_s,
                              max_compile_s=args.max_compile_s, use_cache=not args.no_cache)
    print(f"matrix   {m.path}: {w.M} x {w.K}, nnz {w.nnz} ({100 * (1 - w.density):.1f}% sparse), "
          f"N = {args.n}, {args.dtype}, {torch.cuda.get_device_name()}")
    print(f"{'status':<8} {'compile s':>9} {'median us':>10}  schedule")
    ran = sorted(results, key=lambda r: (r.median_us is None, r.median_us or 0.0))
    for r in ran if args.all else [r for r in ran if r.status in ("ok", "cached")]:
        c = f"{r.compile_s:.2f}" if r.compile_s is not None else "-"
        t = f"{r.median_us:.2f}" if r.median_us is not None else "-"
        print(f"{r.status:<8} {c:>9} {t:>10}  {r.schedule!r}" + (f"  ({r.detail})" if r.detail else ""))
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print("tried    " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print(f"best     {best!r}")
    return 0


# ------------------------------------------------------------------ cache

def cmd_cache(args) -> int:
    from .runtime import cache
    if args.action == "list":
        rows = cache.entries()
        for key, size, head in rows:
            print(f"{key}  {size / 1024:>9.1f} KiB  {head}")
        total = sum(r[1] for r in rows)
        print(f"{len(rows)} entries, {total / 1024:.1f} KiB in {cache.cache_dir()}")
    else:
        n = cache.clear()
        print(f"removed {n} entries from {cache.cache_dir()}")
    return 0


# ------------------------------------------------------------------ parser

class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_matrix_options(p, values: bool = True):
    p.add_argument("path", metavar="PATH",
                   help="matrix file: .smtx/.smtx.gz (DLMC pattern), .npy (dense; zeros are the "
                        "mask; bool = mask), .pt/.pth (tensor or state_dict)")
    p.add_argument("--layer", metavar="NAME",
                   help="state_dict entry to read from a .pt file ('fc1' means 'fc1.weight' too); "
                        "conv weights are flattened to C_out x C_in*kh*kw")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the N(0, 1) values drawn for pattern-only files (default 0)")
    if values:
        p.add_argument("--dtype", choices=DTYPES, default="float32",
                       help="weight and activation dtype (default float32)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog=PROG, description="SparseRT-style mask-specialised sparse kernels on "
                     "Triton: inspect masks, emit the generated kernels, time and tune them.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("inspect", help="shape, nnz, sparsity and row-length histogram of a matrix",
                       description="Print shape, nnz, sparsity, row-length statistics, a text "
                       "histogram and the default plan of a matrix. With a directory, one line "
                       "per .smtx/.smtx.gz/.npy file under it.")
    _add_matrix_options(p, values=False)
    p.add_argument("--plot", metavar="FILE.png", help="save a spy plot and row-length histogram")
    p.add_argument("--n", type=int, default=128,
                   help="N (columns of X) for which the default plan is shown (default 128)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("emit", help="write the generated Triton kernel for a matrix and schedule",
                       description="Generate the Triton source specialised to a matrix's mask "
                       "(values of pattern files drawn from a seeded normal distribution).")
    _add_matrix_options(p)
    p.add_argument("--epilogue", choices=EPILOGUE_NAMES, default="plain",
                   help="fused computation: plain = W @ X; bias = W @ X + bias; relu, bias_relu, "
                        "bias_gelu, bias_silu, bias_sigmoid apply that activation (bias per row)")
    p.add_argument("--n", type=int, default=128,
                   help="N (columns of X) the plan is resolved for (default 128)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    _add_schedule_options(p)
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser("bench", help="time one matrix against torch dense and torch CSR (GPU)",
                       description="Time W @ X with the specialised kernel, torch dense (TF32 off "
                       "and, for float32, on) and torch CSR (cuSPARSE), after checking the result "
                       "against torch: GPU time per call (CUDA-graph replays) and eager latency from "
                       "Python (triton.testing.do_bench).")
    _add_matrix_options(p)
    p.add_argument("--n", type=int, default=256, help="columns of X (default 256)")
    p.add_argument("--warmup-ms", type=int, default=25, help="eager timing: do_bench warm-up ms (default 25)")
    p.add_argument("--rep-ms", type=int, default=100, help="eager timing: do_bench measuring ms (default 100)")
    p.add_argument("--csv", metavar="FILE", help="append the results to a CSV (bench/ columns)")
    p.add_argument("--tuned", action="store_true",
                   help="time the autotuner's schedule instead of the one given (tunes first "
                        "unless a tuned plan is cached)")
    p.add_argument("--budget-s", type=float, default=60.0,
                   help="with --tuned: the tuner's time budget in seconds (default 60)")
    _add_schedule_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="search the schedule space for a matrix (GPU)",
                       description="Run the autotuner (sparsert_triton.tune) on one matrix: "
                       "candidates are built, checked against torch and timed; the best plan is "
                       "stored in the cache (a second run returns it at once).")
    _add_matrix_options(p)
    p.add_argument("--n", type=int, default=256, help="columns of X (default 256)")
    p.add_argument("--epilogue", choices=EPILOGUE_NAMES, default="plain",
                   help="the program to tune (as for emit; default plain = W @ X)")
    p.add_argument("--budget-s", type=float, default=60.0,
                   help="wall-time budget of the search in seconds (default 60)")
    p.add_argument("--max-compile-s", type=float, default=30.0,
                   help="skip candidates estimated to compile slower than this (default 30)")
    p.add_argument("--no-cache", action="store_true",
                   help="search again even if a tuned plan is stored, and store nothing")
    p.add_argument("--all", action="store_true",
                   help="list every candidate (also skipped, wrong and failed ones)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("cache", help="list or clear the on-disk kernel cache",
                       description="The cache folder is $SPARSERT_CACHE_DIR or "
                       "~/.cache/sparsert-triton.")
    p.add_argument("action", choices=("list", "clear"),
                   help="list: key, size and matrix of each entry; clear: delete every entry")
    p.set_defaults(func=cmd_cache)
    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad input, 1 internal error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("n",):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be >= 1")
    try:
        return args.func(args)
    except CliError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:    # the library's own checks (schedules, weights)
        print(f"{PROG}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:                 # e.g. `sparsert emit ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("SPARSERT_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
              " (set SPARSERT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
