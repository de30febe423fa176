"""Benchmark sparse x dense products on DLMC matrices: sparsert against dense and sparse peers.

    python -m bench.dlmc_bench --dlmc DIR [--subset quick|full] [--models rn50,transformer]
        [--sparsities 0.9,0.95] [--dtypes float32,float16] [--out bench/results/dlmc_h100.csv]
        [--tune-budget S] [--max-compile-s S] [--case-budget-s S] [--deadline-s S]
        [--match REGEX] [--shard I/N] [--per-shape K] [--resume] [--cache-dir DIR]

Input: ``DIR/<model>/magnitude_pruning/<sparsity>/<name>.smtx(.gz)``. Only matrices that are
plain GEMMs are run: ResNet-50 1x1 convolutions (``bottleneck_1*``, ``bottleneck_3*``,
``bottleneck_projection*``) and its ``final_dense`` layer, and every Transformer matrix; the
3x3 (``bottleneck_2*``) and 7x7 (``initial_conv``) convolutions are skipped. N: ResNet-50 at
batch 1 (``DIR/rn50_batchsizes.txt``, ``name,N``) and batch 8 (8 N); Transformer at 256 and
2048. Weight values and X are drawn from seeded normal distributions, in the case's dtype.

A case is (matrix, N, dtype). Per case every system's result is checked against the float64
product of the masked dense weight (relative bound by dtype, see
``sparsert_triton.tune.check_result``) before it is timed (``bench.timing``). Systems:
``dense``, ``dense_tf32`` (float32 only), ``cusparse``, ``triton_csr`` (``bench.baselines``),
``sparsert_default`` (the heuristic schedule, ``sparsert_triton.tune.heuristic``) and
``sparsert`` (the autotuner's best within ``--tune-budget`` seconds).

Output CSV (written row by row), columns exactly
``matrix,model,sparsity,M,K,N,nnz,dtype,system,median_us,eager_us,compile_s,schedule``:
``compile_s`` (seconds of the first call of that build in this process: generate + compile +
load) and ``schedule`` (its ``repr``) are filled for the sparsert systems only. A system whose
check failed or that raised has empty times and ``FAILED: ...``/``ERROR: ...`` in ``schedule``.
Beside the CSV: ``<stem>.meta.json`` (device, versions, arguments) and ``<stem>.tune.jsonl``
(every tuning candidate's outcome). The run stops starting new work at ``--deadline-s``, so
it always ends with a complete file; ``--resume`` skips cases already in the CSV. A matrix
file that cannot be read (empty, truncated, a bad header) is skipped, named on stderr and in
the meta's ``unreadable``, and the run goes on.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

COLUMNS = ["matrix", "model", "sparsity", "M", "K", "N", "nnz", "dtype", "system", "median_us",
           "eager_us", "compile_s", "schedule"]
MODELS = ("rn50", "transformer")
PRUNING = "magnitude_pruning"
TRANSFORMER_N = ((256, "N=256"), (2048, "N=2048"))
BASELINES = ("dense", "dense_tf32", "cusparse", "triton_csr")
SPARSERT = ("sparsert_default", "sparsert")
SYSTEMS = BASELINES + SPARSERT
GEMM_KINDS = ("1x1", "fc")
#: The quick subset: small, medium and large layers of both models.
QUICK = {
    "rn50": ("bottleneck_1_block_group1_1_1",        # 64 x 256,    N 3136 / 25088
             "bottleneck_3_block_group2_1_1",        # 512 x 128,   N 784 / 6272
             "bottleneck_1_block_group3_1_1"),       # 256 x 1024,  N 196 / 1568
    "transformer": ("body_encoder_layer_0_self_attention_multihead_attention_q_fully_connected",  # 512 x 512
                    "body_encoder_layer_0_ffn_conv1_fully_connected"),                            # 2048 x 512
}
QUICK_DEFAULTS = {"sparsities": "0.9,0.95", "dtypes": "float32,float16", "tune_budget": 4.0,
                  "max_compile_s": 8.0, "deadline_s": 360.0}
FULL_DEFAULTS = {"sparsities": "0.8,0.9,0.95,0.98", "dtypes": "float32,float16",
                 "tune_budget": 30.0, "max_compile_s": 30.0, "deadline_s": 540.0}


# ------------------------------------------------------------------ finding the matrices

@dataclass(frozen=True)
class MatrixFile:
    path: Path
    model: str
    sparsity: str
    name: str
    kind: str      # "1x1", "fc", "3x3", "7x7" or "unknown"


@dataclass(frozen=True)
class Case:
    matrix: MatrixFile
    N: int
    n_group: str   # batch1 / batch8 (rn50), N=256 / N=2048 (transformer)
    dtype: str

    @property
    def key(self) -> tuple:
        return (self.matrix.name, self.matrix.model, self.matrix.sparsity, self.N, self.dtype)


def classify(model: str, name: str) -> str:
    """What a DLMC matrix is: Transformer matrices and ResNet-50's final layer are fully
    connected (``fc``); ResNet-50's bottleneck_1/3 and projection layers are 1x1
    convolutions; bottleneck_2 layers are 3x3 and initial_conv is 7x7 (im2col K = C_in k^2)."""
    if model == "transformer" or name == "final_dense":
        return "fc"
    if name == "initial_conv":
        return "7x7"
    if name.startswith("bottleneck_2"):
        return "3x3"
    if name.startswith(("bottleneck_1", "bottleneck_3", "bottleneck_projection")):
        return "1x1"
    return "unknown"


def _stem(path: Path) -> Optional[str]:
    for ext in (".smtx.gz", ".smtx"):
        if path.name.endswith(ext):
            return path.name[:-len(ext)]
    return None


def find_matrix(root, model: str, sparsity: str, name: str, pruning: str = PRUNING) -> Path:
    """The file of one DLMC matrix: ``root/<model>/<pruning>/<sparsity>/<name>.smtx[.gz]``."""
    folder = Path(root, model, pruning, sparsity)
    for suffix in (".smtx", ".smtx.gz"):
        if (folder / (name + suffix)).is_file():
            return folder / (name + suffix)
    raise FileNotFoundError(f"--dlmc {root}: no {model}/{pruning}/{sparsity}/{name}.smtx[.gz]")


def find_matrices(root, models: Sequence[str] = MODELS, sparsities: Optional[Sequence[str]] = None,
                  pruning: str = PRUNING) -> List[MatrixFile]:
    """Every ``.smtx``/``.smtx.gz`` under ``root/<model>/<pruning>/<sparsity>/``, classified."""
    root = Path(root)
    wanted = None if not sparsities else {float(s) for s in sparsities}
    out = []
    for model in models:
        base = root / model / pruning
        if not base.is_dir():
            raise FileNotFoundError(f"--dlmc {root}: no folder {model}/{pruning} (expected the "
                                    "DLMC layout <model>/magnitude_pruning/<sparsity>/<name>.smtx)")
        for sdir in sorted(p for p in base.iterdir() if p.is_dir()):
            try:
                level = float(sdir.name)
            except ValueError:
                continue
            if wanted is not None and not any(abs(level - s) < 1e-9 for s in wanted):
                continue
            for f in sorted(sdir.iterdir()):
                name = _stem(f)
                if name is not None:
                    out.append(MatrixFile(f, model, sdir.name, name, classify(model, name)))
    return out


def read_batch_sizes(root) -> Dict[str, int]:
    """``rn50_batchsizes.txt``: per ResNet-50 layer, N at batch 1 (output pixels)."""
    path = Path(root) / "rn50_batchsizes.txt"
    if not path.exists():
        raise FileNotFoundError(f"--dlmc {root}: no rn50_batchsizes.txt (N per ResNet-50 layer)")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, n = line.rsplit(",", 1)
            out[name.strip()] = int(n)
    return out


class UnreadableMatrix(Exception):
    """A matrix file that cannot be read (missing, truncated, not gzip, a bad header or
    inconsistent contents): its cases are skipped, the run goes on."""

    def __init__(self, path, cause: BaseException):
        kind = type(cause).__name__ if type(cause).__module__ == "builtins" else \
            f"{type(cause).__module__}.{type(cause).__name__}"      # zlib.error, gzip.BadGzipFile
        self.path, self.reason = Path(path), f"{kind}: {_first_line(cause)}"
        super().__init__(f"{self.path}: {self.reason}")


def _read_errors():
    import zlib
    return (OSError, EOFError, ValueError, zlib.error)   # gzip: OSError, EOFError, zlib.error


def smtx_shape(path: Path) -> tuple:
    """(M, K, nnz) from a DLMC file's header line; ``UnreadableMatrix`` if it has none."""
    import gzip
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt") as f:
            shape = tuple(int(t) for t in f.readline().replace(",", " ").split())
        if len(shape) != 3:
            raise ValueError(f"bad header: {len(shape)} numbers, expected 'M, K, nnz'")
    except _read_errors() as ex:
        raise UnreadableMatrix(path, ex) from ex
    return shape


def make_cases(matrices: Sequence[MatrixFile], batch_sizes: Dict[str, int], dtypes: Sequence[str],
               names: Optional[Dict[str, Sequence[str]]] = None, match: Optional[str] = None,
               per_shape: Optional[int] = None) -> List[Case]:
    """Cases in run order: dtype, then model, matrix, sparsity, N (so batch 8 follows batch 1
    of the same matrix and reuses its builds). Non-GEMM matrices are left out; ``per_shape``
    keeps only the first k matrices (by name) of each (model, sparsity, M x K)."""
    pat = re.compile(match) if match else None
    chosen_all = [m for m in matrices if m.kind in GEMM_KINDS
                  and (names is None or m.name in names.get(m.model, ()))
                  and (pat is None or pat.search(f"{m.model}/{m.sparsity}/{m.name}"))]
    if per_shape:
        count = {}
        kept = []
        for m in sorted(chosen_all, key=lambda m: (m.model, m.sparsity, m.name)):
            try:
                shape_key = (m.model, m.sparsity, smtx_shape(m.path)[:2])
            except UnreadableMatrix as ex:
                print(f"[dlmc] skipped {ex.path}: unreadable ({ex.reason})", file=sys.stderr)
                continue
            count[shape_key] = count.get(shape_key, 0) + 1
            if count[shape_key] <= per_shape:
                kept.append(m)
        chosen_all = kept
    cases = []
    for dtype in dtypes:
        chosen = list(chosen_all)
        chosen.sort(key=lambda m: (MODELS.index(m.model) if m.model in MODELS else 9, m.name,
                                   float(m.sparsity)))
        for m in chosen:
            if m.model == "rn50":
                if m.name not in batch_sizes:
                    print(f"[dlmc] {m.name}: not in rn50_batchsizes.txt, skipped", file=sys.stderr)
                    continue
                ns = ((batch_sizes[m.name], "batch1"), (8 * batch_sizes[m.name], "batch8"))
            else:
                ns = TRANSFORMER_N
            cases += [Case(m, n, g, dtype) for n, g in ns]
    return cases


def shard(cases: Sequence[Case], spec: Optional[str]) -> List[Case]:
    """``"i/n"``: every n-th matrix starting at the i-th (1-based), all its cases together."""
    if not spec:
        return list(cases)
    i, n = (int(t) for t in spec.split("/"))
    if not 1 <= i <= n:
        raise ValueError(f"--shard must be i/n with 1 <= i <= n, got {spec!r}")
    mats = sorted({(c.matrix.model, c.matrix.sparsity, c.matrix.name) for c in cases})
    mine = set(mats[i - 1::n])
    return [c for c in cases if (c.matrix.model, c.matrix.sparsity, c.matrix.name) in mine]


# ------------------------------------------------------------------ running

@dataclass
class Options:
    tune_budget: float = 6.0
    max_compile_s: float = 8.0
    default_max_compile_s: float = 10.0
    case_budget_s: float = 120.0
    deadline: float = float("inf")       # time.time() after which nothing new starts
    reserve_s: float = 15.0
    seed: int = 0
    systems: Sequence[str] = SYSTEMS
    tune_kwargs: Optional[dict] = None   # extra arguments for tune (tests)


def _elem_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _fmt(v) -> str:
    return "" if v is None else f"{v:.5g}" if isinstance(v, float) else str(v)


class Runner:
    """Runs cases and writes one CSV row per (case, system).

    ``time_fn(make_call, X, bytes_per_set) -> bench.timing.Timing`` and ``tune_timer`` are
    injectable so the flow can run on the CPU (under the Triton interpreter) in tests."""

    def __init__(self, out_csv: Path, options: Options, time_fn: Callable = None,
                 tune_timer: Callable = None, device: str = "cuda", progress: bool = True):
        from sparsert_triton import sparse_kernel
        self.out_csv, self.opt, self.device, self.progress = Path(out_csv), options, device, progress
        if time_fn is None:
            from .timing import time_system
            time_fn = time_system
        self.time_fn, self.tune_timer = time_fn, tune_timer
        self.program = sparse_kernel(spmm)
        self._patterns = {}
        self.rows_written = 0
        self.cases_run = 0
        self.unreadable: Dict[str, str] = {}    # path -> why; its cases are skipped

    # -- output
    def _write(self, row: dict):
        new = not self.out_csv.exists() or self.out_csv.stat().st_size == 0
        with open(self.out_csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow({c: _fmt(row.get(c)) for c in COLUMNS})
        self.rows_written += 1

    def _log_tune(self, case: Case, results):
        path = self.out_csv.with_suffix(".tune.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps({"matrix": case.matrix.name, "model": case.matrix.model,
                                "sparsity": case.matrix.sparsity, "N": case.N, "dtype": case.dtype,
                                "results": [r.row() for r in results]}, default=repr) + "\n")

    # -- one case
    def _weight_and_x(self, case: Case):
        import torch
        from sparsert_triton.dlmc import read_smtx
        p = self._patterns.get(case.matrix.path)
        if p is None:
            try:
                p = read_smtx(case.matrix.path)
            except _read_errors() as ex:
                raise UnreadableMatrix(case.matrix.path, ex) from ex
            self._patterns[case.matrix.path] = p
        weight = p.with_values(seed=self.opt.seed, dtype=case.dtype)
        g = torch.Generator().manual_seed(self.opt.seed * 1000003 + case.N)
        from .baselines import torch_dtype
        X = torch.randn(p.K, case.N, generator=g).to(torch_dtype(case.dtype)).to(self.device)
        return weight, X

    def _left(self, case_end: float) -> float:
        return min(case_end, self.opt.deadline) - time.time()

    def run_case(self, case: Case) -> Dict[str, Optional[float]]:
        """Measure every system on one case; returns {system: median_us or None}."""
        import torch
        from sparsert_triton.tune import (check_result, first_call, heuristic,
                                          reference_and_magnitude, tune)
        from . import baselines
        opt = self.opt
        case_end = time.time() + opt.case_budget_s
        weight, X = self._weight_and_x(case)
        ref, mag = reference_and_magnitude(weight, X)
        e = _elem_bytes(case.dtype)
        set_bytes = e * (X.shape[0] * X.shape[1] + weight.M * X.shape[1] + weight.nnz) + 4 * weight.nnz
        base = {"matrix": case.matrix.name, "model": case.matrix.model, "sparsity": case.matrix.sparsity,
                "M": weight.M, "K": weight.K, "N": case.N, "nnz": weight.nnz, "dtype": case.dtype}
        medians = {}

        def measure(system: str, make_call, tol=None, compile_s=None, schedule=None):
            row = dict(base, system=system, compile_s=compile_s,
                       schedule=schedule if schedule is not None else "")
            try:
                Y = make_call(X)()
                ok, ratio = check_result(Y, ref, mag, case.dtype, tol)
                if not ok:
                    row["schedule"] = f"FAILED: error ratio {ratio:.3g} > 1 " + row["schedule"]
                else:
                    t = self.time_fn(make_call, X, set_bytes)
                    row["median_us"], row["eager_us"] = t.median_us, t.eager_us
            except Exception as ex:
                if _fatal(ex):
                    raise
                row["schedule"] = f"{_error(ex)} " + row["schedule"]
            self._write(row)
            medians[system] = row.get("median_us")

        for system in BASELINES:
            if system not in opt.systems or not baselines.applies(system, case.dtype):
                continue
            if self._left(case_end) < 2:
                break
            fn = getattr(baselines, system)
            tol = 5e-3 if system == "dense_tf32" else None
            measure(system, lambda x, fn=fn: fn(weight, x, case.dtype), tol=tol)

        def sparsert_call(schedule):
            k = self.program.specialize(weight, schedule=schedule)

            def make_call(x):
                out = torch.empty(weight.M, x.shape[1], dtype=x.dtype, device=x.device)
                return lambda: k(x, out=out)
            return k, make_call

        if "sparsert_default" in opt.systems and self._left(case_end) >= 2:
            s = heuristic(weight, case.N, case.dtype, max_compile_s=opt.default_max_compile_s)
            try:
                k, make_call = sparsert_call(s)
                _, compile_s = first_call(k, X)
            except Exception as ex:
                if _fatal(ex):
                    raise
                self._write(dict(base, system="sparsert_default",
                                 schedule=f"{_error(ex)} {s!r}"))
                medians["sparsert_default"] = None
            else:
                measure("sparsert_default", make_call, compile_s=compile_s, schedule=repr(s))

        if "sparsert" in opt.systems and self._left(case_end) >= 2:
            left = self._left(case_end) - opt.reserve_s
            budget = max(0.0, min(opt.tune_budget, left))
            max_compile = max(3.0, min(opt.max_compile_s, left))   # table builds always fit
            kw = dict(budget_s=budget, max_compile_s=max_compile, progress=False,
                      reference=(ref, mag), timer=self.tune_timer)
            kw.update(opt.tune_kwargs or {})
            try:
                s, results = tune(self.program, weight, X, **kw)
                self._log_tune(case, results)
                best = [r for r in results if r.status in ("ok", "cached") and r.plan is not None
                        and r.plan.to_schedule() == s]
                k, make_call = sparsert_call(s)
                _, first_s = first_call(k, X)
                compile_s = best[0].compile_s if best and best[0].compile_s is not None else first_s
                measure("sparsert", make_call, compile_s=compile_s, schedule=repr(s))
            except Exception as ex:
                if _fatal(ex):
                    raise
                self._write(dict(base, system="sparsert",
                                 schedule=_error(ex)))
                medians["sparsert"] = None
        return medians

    def run(self, cases: Sequence[Case]) -> int:
        """Run cases until done or the deadline; returns how many cases ran. The cases of a
        matrix file that cannot be read are skipped (named once on stderr, listed in
        ``unreadable``); the run goes on."""
        from tqdm.auto import tqdm
        done = 0
        bar = tqdm(cases, desc="dlmc", unit="case", disable=not self.progress, file=sys.stderr,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        for case in bar:
            if self.opt.deadline - time.time() < self.opt.reserve_s:
                tqdm.write(f"[dlmc] deadline: stopping with {len(cases) - done} of {len(cases)} "
                           "cases not run", file=sys.stderr)
                break
            if str(case.matrix.path) in self.unreadable:
                continue
            bar.set_postfix_str(f"{case.matrix.model}/{case.matrix.sparsity}/{case.matrix.name[:28]} "
                                f"N={case.N} {case.dtype}")
            try:
                med = self.run_case(case)
            except UnreadableMatrix as ex:
                self.unreadable[str(ex.path)] = ex.reason
                tqdm.write(f"[dlmc] skipped {ex.path}: unreadable ({ex.reason}); going on",
                           file=sys.stderr)
                continue
            done += 1
            self.cases_run += 1
            tqdm.write(_summary(case, med), file=sys.stderr)
        bar.close()
        return done


def spmm(W, X):
    """The benchmarked program: the plain product."""
    return W @ X


def _first_line(ex: Exception) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else "")[:200].replace(",", ";")


def _error(ex: Exception) -> str:
    """The ``schedule`` column of a system that raised."""
    return f"ERROR: {type(ex).__name__}: {_first_line(ex)}"


def _fatal(ex: Exception) -> bool:
    """A CUDA error that leaves the context unusable: stop the run (rows so far are kept)."""
    s = str(ex)
    return "CUDA error" in s and ("illegal" in s or "unspecified launch failure" in s
                                  or "misaligned" in s)


def _summary(case: Case, med: Dict[str, Optional[float]]) -> str:
    sp = med.get("sparsert")
    parts = [f"{case.matrix.model}/{case.matrix.sparsity}/{case.matrix.name} N={case.N} {case.dtype}:"]
    parts.append(f"sparsert {sp:.2f}us" if sp else "sparsert -")
    for b in ("sparsert_default",) + BASELINES:
        v = med.get(b)
        if v and sp:
            parts.append(f"{b} {v:.2f}us ({v / sp:.2f}x)")
        elif b in med:
            parts.append(f"{b} -")
    return " ".join(parts)


def done_keys(path: Path) -> set:
    """Cases already measured in a CSV (those with a ``sparsert`` row)."""
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {(r["matrix"], r["model"], r["sparsity"], int(r["N"]), r["dtype"])
                for r in csv.DictReader(f) if r.get("system") == "sparsert"}


def write_meta(path: Path, args: dict, **extra):
    import torch
    from sparsert_triton.runtime import cache
    meta = {"args": args, "argv": sys.argv, "versions": cache.versions(), **extra}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        meta["device"] = {"name": p.name, "capability": f"sm_{p.major}{p.minor}",
                          "sms": p.multi_processor_count,
                          "memory_gb": round(p.total_memory / 1e9, 1),
                          "l2_mb": round(getattr(p, "L2_cache_size", 0) / 1e6, 1),
                          "cuda": torch.version.cuda}
    path.write_text(json.dumps(meta, indent=1, default=repr))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.dlmc_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dlmc", required=True, help="DLMC folder (<model>/magnitude_pruning/<sparsity>/...)")
    ap.add_argument("--subset", choices=("quick", "full"), default="quick")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sparsities", help="comma list (quick: 0.9,0.95; full: 0.8,0.9,0.95,0.98)")
    ap.add_argument("--dtypes", help="comma list of float32,float16,bfloat16 (default float32,float16)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--out", default="bench/results/dlmc_h100.csv")
    ap.add_argument("--tune-budget", type=float, help="seconds of tuning per case (quick 4, full 30)")
    ap.add_argument("--max-compile-s", type=float, help="skip candidates estimated to build slower")
    ap.add_argument("--default-max-compile-s", type=float, default=10.0,
                    help="the heuristic default switches to table mode past this build estimate")
    ap.add_argument("--case-budget-s", type=float, default=120.0, help="wall seconds per case")
    ap.add_argument("--deadline-s", type=float, help="stop starting work after this many seconds "
                                                     "(quick 360, full 540)")
    ap.add_argument("--match", help="regex on <model>/<sparsity>/<name>")
    ap.add_argument("--shard", help="i/n: run every n-th matrix from the i-th")
    ap.add_argument("--per-shape", type=int, help="keep the first k matrices of each (model, "
                                                  "sparsity, M x K): a smaller full suite")
    ap.add_argument("--resume", action="store_true", help="append; skip cases already in --out")
    ap.add_argument("--cache-dir", help="sparsert cache (default: a fresh temporary folder, so "
                                        "compile_s is a cold build)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.time()
    defaults = QUICK_DEFAULTS if a.subset == "quick" else FULL_DEFAULTS
    sparsities = (a.sparsities or defaults["sparsities"]).split(",")
    dtypes = (a.dtypes or defaults["dtypes"]).split(",")
    models = a.models.split(",")
    systems = a.systems.split(",")
    for bad, allowed, what in ((set(models) - set(MODELS), MODELS, "--models"),
                               (set(dtypes) - {"float32", "float16", "bfloat16"},
                                ("float32", "float16", "bfloat16"), "--dtypes"),
                               (set(systems) - set(SYSTEMS), SYSTEMS, "--systems")):
        if bad:
            ap.error(f"{what}: unknown {sorted(bad)}; choose from {list(allowed)}")
    os.environ["SPARSERT_CACHE_DIR"] = a.cache_dir or tempfile.mkdtemp(prefix="sparsert-bench-")
    from .timing import require_cuda
    require_cuda()

    matrices = find_matrices(a.dlmc, models, sparsities)
    batch = read_batch_sizes(a.dlmc) if "rn50" in models else {}
    cases = make_cases(matrices, batch, dtypes, QUICK if a.subset == "quick" else None, a.match,
                       a.per_shape)
    cases = shard(cases, a.shard)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.resume:
        have = done_keys(out)
        cases = [c for c in cases if c.key not in have]
    else:
        for p in (out, out.with_suffix(".tune.jsonl")):
            if p.exists():
                p.unlink()
    skipped = sorted({f"{m.model}/{m.name} ({m.kind})" for m in matrices if m.kind not in GEMM_KINDS})
    print(f"[dlmc] {len(cases)} cases ({a.subset}); skipping {len(skipped)} non-GEMM matrices "
          f"(3x3/7x7 convolutions); cache {os.environ['SPARSERT_CACHE_DIR']}", file=sys.stderr)
    opt = Options(tune_budget=a.tune_budget if a.tune_budget is not None else defaults["tune_budget"],
                  max_compile_s=a.max_compile_s if a.max_compile_s is not None else defaults["max_compile_s"],
                  default_max_compile_s=a.default_max_compile_s, case_budget_s=a.case_budget_s,
                  deadline=t0 + (a.deadline_s if a.deadline_s is not None else defaults["deadline_s"]),
                  seed=a.seed, systems=systems)
    meta_path = out.with_suffix(".meta.json")
    args = dict(vars(a), sparsities=sparsities, dtypes=dtypes, models=models)
    write_meta(meta_path, args, started=time.strftime("%Y-%m-%d %H:%M:%S"), cases=len(cases))
    runner = Runner(out, opt, progress=not a.no_progress)
    error = None
    try:
        runner.run(cases)
    except Exception as ex:          # a fatal CUDA error: keep what was measured, say why
        error = f"{type(ex).__name__}: {_first_line(ex)}"
        print(f"[dlmc] stopped: {error}", file=sys.stderr)
    write_meta(meta_path, args, started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
               finished=time.strftime("%Y-%m-%d %H:%M:%S"), cases=len(cases), cases_run=runner.cases_run,
               wall_s=round(time.time() - t0, 1), rows=runner.rows_written, error=error,
               unreadable=runner.unreadable)
    if error:
        return 1
    print(f"[dlmc] {runner.cases_run}/{len(cases)} cases, {runner.rows_written} rows -> {out} "
          f"in {time.time() - t0:.0f}s"
          + (f"; {len(runner.unreadable)} unreadable matrices skipped" if runner.unreadable else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
