"""Eager (no CUDA graph) cost of a sparse layer and of a sparse BERT, against the dense ones.

    python -m bench.eager_bench [--out bench/results/eager_h100.csv] [--results-md PATH]
    python -m bench.eager_bench --smoke --out /tmp/eager.csv    # CPU, interpreter, tiny shapes
    python -m bench.eager_bench --dtypes float32 --tokens '' --batches 8 --out /tmp/part.csv
    python -m bench.eager_bench --host-profile                  # CPU: host path, launch stubbed
    python -m bench.eager_bench --model-host-profile            # CPU: the same inside a BERT

CSV columns: ``model,layer,dtype,N,system,eager_us,graph_us``; ``system`` is ``dense`` (the
pruned ``nn.Linear`` / model run as is) or ``sparse`` (after ``sparsify``); ``N`` is the
number of tokens (rows of the Linear's input: batch x sequence); ``layer`` is empty for
whole-model rows.

* ``eager_us``: host wall clock per call over many back-to-back eager calls followed by one
  ``torch.cuda.synchronize``: what eager PyTorch code sees, host path and GPU time together.
  The cases of one comparison (dense and its sparse variants at one dtype and N) are timed
  in 15 interleaved rounds of ~10 ms each, the fastest round per case
  (:func:`interleaved_times`), so a slow spell of the machine cannot land on one row alone.
* ``graph_us``: the same call captured in a CUDA graph, per replay (GPU time, no host path).

Rows on the GPU (fp16 and fp32):

* ``model=bert-base, layer=768x3072``: ``nn.Linear(768, 3072)`` magnitude-pruned to 90% and its
  ``SparseLinear``, for a row-major (N, 768) input (a LayerNorm's output) at N = 1, 128, 1024.
  ``layer=768x3072/x-in-place`` is the same sparse layer with ``row_major_input="strided"``:
  the kernel reads the row-major input in place instead of after one transposing copy (see
  :class:`sparsert_triton.nn.SparseLinear`), so the two rows compare that choice. (The
  half-precision ``tl.dot`` kernels read a row-major input in place, and the fp32 one-row
  table kernel transposes it in its own launch: the two rows run the same kernels, except
  fp32 above ``transposed.MAX_N`` tokens, where the plain row gets the copy and
  ``x-in-place`` the kernel's own transpose.) The plain
  ``sparse`` row has SparseLinear's default output layout (``output_layout="rows"``: the
  kernel writes nn.Linear's row-major output); ``/y-columns`` the other one (the kernel
  writes ``Y^T`` (out, N) and the layer returns its transposed view; the default before
  ``rows``, whose rows were labelled ``y-rows`` then).
* ``model=bert-base`` (and ``bert-base/x-in-place``, ``bert-base/y-columns``), empty layer:
  transformers' ``BertModel`` (bert-base config, no pooler, random init, seq 128, every
  Linear pruned to 90%, ``sparsify()`` with the default schedule and output layout) at
  batch 1 and 8, under ``torch.no_grad()``; skipped when transformers is not importable.

Every sparse output is checked against the dense one first (exit status 1 on a mismatch).

The CSV is rewritten after each comparison, so a run cut short keeps the rows it finished;
``--dtypes``, ``--tokens`` (the layer rows' N) and ``--batches`` (the model rows') run a part.

``--smoke`` runs the same code on the CPU under the Triton interpreter with tiny shapes (a
16 -> 32 layer, a tiny BertModel, or a 2-layer MLP without transformers): outputs checked,
times from the host clock (interpreted kernels: not a measurement), ``graph_us`` empty.
``--host-profile`` measures the host path of one ``SparseLinear`` call on the CPU, for both
output layouts, with the final Triton launch replaced by a no-op (``bench/host_profile.py``):
the Python work this project adds per call, without Triton's own launcher or any kernel,
and how many of the calls ran planned. ``--model-host-profile`` does the same for every
``SparseLinear`` inside a small BertModel (bert-base's layer shapes, ``--layers`` layers,
``--batch`` x ``--seq`` tokens), for both output layouts, against each layer called alone,
and counts the planned calls, the transposing copies made and shared, the ``aten`` ops the
sparse forward runs beyond the dense one, and among them the kernel ops (those that launch
work on a GPU) and the attention's path.
:func:`write_results_section` writes the CSV as a marked section of ``RESULTS.md``.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import nn

try:
    from bench.models import magnitude_prune_
    from bench.report import write_marked, write_rows
except ImportError:      # run as a script: python bench/eager_bench.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.models import magnitude_prune_
    from bench.report import write_marked, write_rows

COLUMNS = ("model", "layer", "dtype", "N", "system", "eager_us", "graph_us")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: max |sparse - dense| / max |dense| accepted (different accumulation orders)
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
BEGIN, END = "<!-- eager-bench:begin -->", "<!-- eager-bench:end -->"
SPARSITY = 0.9
IN_PLACE = "x-in-place"
#: rounds of interleaved eager timing per comparison on the GPU
ROUNDS = 15


# ---------------------------------------------------------------- timing

def host_us(fn: Callable, calls: int, windows: int = 5) -> float:
    """Host microseconds per call on the CPU: the calling thread's CPU time (time spent
    descheduled by other processes does not count) over ``calls`` back-to-back calls, the
    fastest of ``windows`` windows."""
    fn()
    best = math.inf
    for _ in range(windows):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, time.thread_time() - t0)
    return best * 1e6 / calls


def graph_us(fn: Callable) -> float:
    """GPU microseconds per call of ``fn`` replayed in a CUDA graph; NaN if capture fails."""
    from sparsert_triton.runtime.timing import graph_median_us
    try:
        return graph_median_us([fn])
    except Exception as e:  # report the eager figure anyway
        print(f"  (CUDA graph capture failed: {type(e).__name__}: {e})", file=sys.stderr)
        torch.cuda.synchronize()
        return math.nan


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------- cases

def pruned_linear(in_f: int, out_f: int, dtype, device, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    magnitude_prune_(lin, SPARSITY)
    return lin.to(device=device, dtype=dtype).eval()


def set_input_layout(model: nn.Module, layout: str) -> nn.Module:
    """``row_major_input`` of every SparseLinear in ``model``."""
    from sparsert_triton.nn import SparseLinear
    for m in model.modules():
        if isinstance(m, SparseLinear):
            m.row_major_input = layout
    return model


def set_output_layout(model: nn.Module, layout: str) -> nn.Module:
    """``output_layout`` of every SparseLinear in ``model``."""
    from sparsert_triton.nn import SparseLinear
    for m in model.modules():
        if isinstance(m, SparseLinear):
            m.output_layout = layout
    return model


def other_output_layout() -> tuple:
    """(layout, tag): the SparseLinear output layout that is not the default, and the suffix
    of its rows (``y-columns`` while the default is ``rows``)."""
    from sparsert_triton.nn import SparseLinear
    other = next(o for o in SparseLinear.OUTPUT_LAYOUTS
                 if o != SparseLinear.DEFAULT_OUTPUT_LAYOUT)
    return other, f"y-{other}"


def layer_cases(in_f: int, out_f: int, tokens, dtypes, device):
    """(model, layer, dtype, N, system, fn, output-of-fn) for the single-layer rows."""
    from sparsert_triton.nn import SparseLinear
    name = f"{in_f}x{out_f}"
    other, other_tag = other_output_layout()
    for dname in dtypes:
        dense = pruned_linear(in_f, out_f, DTYPES[dname], device)
        sparse = SparseLinear.from_linear(dense).eval()
        in_place = set_input_layout(copy.deepcopy(sparse), "strided")
        other_out = set_output_layout(copy.deepcopy(sparse), other)
        for N in tokens:
            x = torch.randn(N, in_f, device=device, dtype=DTYPES[dname])
            # a new tensor object per call (a view of x), as a model's activations are: a
            # sparse layer shares its transposing copy only among calls on one tensor
            yield ("bert-base", name, dname, N, "dense",
                   lambda m=dense, x=x: m(x.view(x.shape)))
            yield ("bert-base", name, dname, N, "sparse",
                   lambda m=sparse, x=x: m(x.view(x.shape)))
            yield ("bert-base", f"{name}/{IN_PLACE}", dname, N, "sparse",
                   lambda m=in_place, x=x: m(x.view(x.shape)))
            yield ("bert-base", f"{name}/{other_tag}", dname, N, "sparse",
                   lambda m=other_out, x=x: m(x.view(x.shape)))


def bert_model(config_kwargs: dict, dtype, device):
    """transformers' BertModel (no pooler), random init, every Linear pruned, eval mode."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    model = BertModel(BertConfig(**config_kwargs), add_pooling_layer=False)
    magnitude_prune_(model, SPARSITY, kinds=(nn.Linear,))
    return model.to(device=device, dtype=dtype).eval()


def model_cases(config_kwargs: dict, seq: int, batches, dtypes, device):
    """The whole-model rows: BertModel when transformers is importable, else a 2-layer MLP
    (only in the smoke run; the GPU run skips the model rows without transformers)."""
    from sparsert_triton import sparsify
    try:
        import transformers  # noqa: F401
        have_bert = True
    except ImportError:
        have_bert = False
    for dname in dtypes:
        dt = DTYPES[dname]
        if have_bert:
            dense, label = bert_model(config_kwargs, dt, device), "bert-base"
            vocab = config_kwargs.get("vocab_size", 30522)
        elif config_kwargs.get("mlp_fallback"):
            torch.manual_seed(0)
            h = config_kwargs["hidden_size"]
            dense = nn.Sequential(nn.Linear(h, 4 * h), nn.GELU(), nn.Linear(4 * h, h))
            dense = magnitude_prune_(dense, SPARSITY).to(device=device, dtype=dt).eval()
            label, vocab = "mlp", None
        else:
            print("transformers is not importable: no whole-model rows", file=sys.stderr)
            return
        sparse, report = sparsify(copy.deepcopy(dense), min_sparsity=0.5)
        in_place = set_input_layout(copy.deepcopy(sparse), "strided")
        other, other_tag = other_output_layout()
        other_out = set_output_layout(copy.deepcopy(sparse), other)
        print(f"{label} {dname}: {len(report.replaced)} of {len(report)} Linears sparse",
              file=sys.stderr)
        for b in batches:
            g = torch.Generator(device="cpu").manual_seed(b)
            if vocab is None:
                inp = torch.randn(b, seq, config_kwargs["hidden_size"], generator=g).to(device, dt)
                call = (lambda m, i=inp: m(i))
            else:
                inp = torch.randint(0, vocab, (b, seq), generator=g).to(device)
                call = (lambda m, i=inp: m(input_ids=i).last_hidden_state)
            for system, model, tag in (("dense", dense, label), ("sparse", sparse, label),
                                       ("sparse", in_place, f"{label}/{IN_PLACE}"),
                                       ("sparse", other_out, f"{label}/{other_tag}")):
                yield (tag, "", dname, b * seq, system, lambda m=model, c=call: c(m))


def interleaved_times(fns, timer: Callable, rounds: int) -> List[float]:
    """``timer(fn)`` of every function, ``rounds`` times round-robin (each round times every
    function once, in order); the fastest of each function's rounds. A slow spell of the
    machine (another process, clock changes) then falls on the rounds of every function
    alike instead of on the one being timed, and a spell longer than a few rounds still
    leaves each function rounds outside it. Timed one after the other, one H100 row stood
    at twice its neighbours' eager time (768x3072 y-rows fp16 N=1: 51.6 us against 27.9)
    with the same GPU time. The median of 7 interleaved rounds was not enough on a busy
    host (twenty-sixth session, fp16 BERT-base, 6 trials of 4 models): one model's rounds
    ranged 3.8-13.8 ms, spells covered 3-4 of a case's 7 rounds, and the medians of two
    copies of the same sparse model differed by up to 40%; the fastest rounds of the same
    trials agreed within ~3%. Host noise only adds time, so the fastest round is what the
    call costs."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, t in zip(fns, times):
            t.append(timer(fn))
    return [min(t) for t in times]


def measure(cases, on_gpu: bool, calls: int, rows: List[dict], rounds: int = ROUNDS,
            done: Optional[Callable[[List[dict]], None]] = None) -> bool:
    """Time every case; append to ``rows``; False if an output mismatched. Cases of one
    comparison (the same model, layer, dtype and N: dense and its sparse variants, in a
    row) are checked (each sparse output against the dense one) and then timed together:
    their eager times interleaved over ``rounds`` rounds (:func:`interleaved_times`; on
    the CPU one round of ``calls`` calls), then each one's CUDA-graph time. ``done(rows)``
    runs after each comparison (the CSV written so far: a run cut short keeps its rows)."""
    ok = True
    for _, group in itertools.groupby(cases, key=lambda c: _comparison(*c[:4])):
        group = list(group)
        ref = None
        with torch.no_grad():
            for model, layer, dname, N, system, fn in group:
                y = fn()
                if system == "dense":
                    ref = y
                    continue
                err = rel_err(y, ref) if ref is not None else math.nan
                if not err <= TOLERANCE[dname]:
                    print(f"MISMATCH {model} {layer} {dname} N={N}: rel err {err:.2e}"
                          + (" (no dense case before it)" if ref is None else ""),
                          file=sys.stderr)
                    ok = False
            del ref, y
            fns = [c[5] for c in group]
            if on_gpu:
                from sparsert_triton.runtime.timing import eager_us
                eager = interleaved_times(fns, lambda f: eager_us(f, target_s=0.01, repeats=1),
                                          rounds)
                graph = [graph_us(f) for f in fns]
            else:
                eager = interleaved_times(fns, lambda f: host_us(f, calls, 1), 1)
                graph = [math.nan] * len(fns)
        for (model, layer, dname, N, system, _), e, g in zip(group, eager, graph):
            rows.append(dict(model=model, layer=layer, dtype=dname, N=N, system=system,
                             eager_us=f"{e:.2f}", graph_us="" if math.isnan(g) else f"{g:.2f}"))
            print(f"{model:22s} {layer:22s} {dname:8s} N={N:<5d} {system:6s} eager {e:9.2f} us"
                  + ("" if math.isnan(g) else f"  graph {g:9.2f} us"), file=sys.stderr)
        if done is not None:
            done(rows)
    return ok


def _comparison(model: str, layer: str, dname: str, N: int) -> tuple:
    """The cases compared with one another: the model and layer without a variant suffix."""
    return (model.split("/")[0], layer.split("/")[0], dname, N)


# ---------------------------------------------------------------- RESULTS.md

def results_section(rows: List[dict], source: str) -> str:
    """A Markdown table of the CSV rows: dense and sparse side by side, and their ratio."""
    pairs = {}
    for r in rows:
        key = (r["model"].split("/")[0], r["layer"].split("/")[0], r["dtype"], int(r["N"]))
        pairs.setdefault(key, {})[(r["system"], r["model"] + "|" + r["layer"])] = r
    lines = [BEGIN, "## Eager host path: SparseLinear and a sparse BERT-base against dense", "",
             f"Source: `{source}` (`python -m bench.eager_bench`). `eager us`: wall clock per "
             "call of back-to-back eager calls and one synchronize (host path and GPU time), "
             "the fastest of 15 rounds interleaved with the compared rows; "
             "`graph us`: CUDA-graph replay (GPU time). `dense/sparse` > 1 means the sparse "
             "layer or model is faster. `x-in-place`: the kernel reads a row-major input "
             "without the transposing copy. Plain sparse rows: SparseLinear's default output "
             "layout (`rows`, nn.Linear's row-major output); `y-columns`: "
             "`output_layout=\"columns\"` (the transposed view of the kernel's (out, N) "
             "result).", "",
             "| model | layer | dtype | N | dense eager us | sparse eager us | dense/sparse eager "
             "| dense graph us | sparse graph us |",
             "|---|---|---|---|---|---|---|---|---|"]

    def num(v):
        return float(v) if v not in ("", None) else math.nan

    for key in sorted(pairs, key=lambda k: (k[0], k[1], k[2], k[3])):
        group = pairs[key]
        dense = next((r for (s, _), r in group.items() if s == "dense"), None)
        for (s, name), r in sorted(group.items(), key=lambda e: (IN_PLACE in e[0][1], e[0])):
            if s != "sparse":
                continue
            de, se = num(dense["eager_us"]) if dense else math.nan, num(r["eager_us"])
            dg, sg = num(dense["graph_us"]) if dense else math.nan, num(r["graph_us"])
            ratio = de / se if se > 0 else math.nan
            cells = [r["model"], r["layer"] or "(model)", r["dtype"], str(r["N"]),
                     f"{de:.1f}", f"{se:.1f}", f"{ratio:.2f}x",
                     "-" if math.isnan(dg) else f"{dg:.1f}", "-" if math.isnan(sg) else f"{sg:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_results_section(csv_path, md_path) -> str:
    """Write the CSV's table into ``md_path`` between the eager-bench markers (replacing an
    earlier one; appended if absent; the rest of the file is kept). Returns the section."""
    import csv
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    section = results_section(rows, Path(csv_path).name)
    write_marked(Path(md_path), section)
    return section


# ---------------------------------------------------------------- main

def run(out, results_md: Optional[str], smoke: bool, calls: int, dtypes=None, tokens=None,
        batches=None) -> bool:
    """The whole benchmark (``dtypes``, layer ``tokens`` and model ``batches``: all by
    default; a subset runs part of it, e.g. the rows a run cut short did not reach)."""
    on_gpu = not smoke
    if smoke:
        device, seq, layer = "cpu", 3, (16, 32)
        all_dtypes, all_tokens, all_batches = ("float32", "float16"), (1, 3), (1, 2)
        config = dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=8, mlp_fallback=True)
    else:
        from bench.timing import require_cuda
        require_cuda()
        torch.backends.cuda.matmul.allow_tf32 = False     # fp32 dense is true fp32, like ours
        device, seq, layer, config = "cuda", 128, (768, 3072), {}
        all_dtypes, all_tokens, all_batches = ("float16", "float32"), (1, 128, 1024), (1, 8)
    dtypes = all_dtypes if dtypes is None else dtypes
    tokens = all_tokens if tokens is None else tokens
    batches = all_batches if batches is None else batches
    rows: List[dict] = []
    done = (lambda rs: write_rows(out, COLUMNS, rs))
    ok = measure(layer_cases(*layer, tokens, dtypes, device), on_gpu, calls, rows, done=done)
    ok = measure(model_cases(config, seq, batches, dtypes, device), on_gpu, calls, rows,
                 done=done) and ok
    write_rows(out, COLUMNS, rows)
    print(f"wrote {out} ({len(rows)} rows)", file=sys.stderr)
    if results_md:
        write_results_section(out, results_md)
        print(f"wrote the eager-bench section of {results_md}", file=sys.stderr)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results/eager_h100.csv")
    ap.add_argument("--results-md", default=None,
                    help="write the table into this RESULTS.md (default: "
                         "bench/results/RESULTS.md on the GPU, none with --smoke)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, Triton interpreter, tiny shapes (a check, not a measurement)")
    ap.add_argument("--host-profile", action="store_true",
                    help="CPU: per-call host time of SparseLinear with the launch stubbed")
    ap.add_argument("--model-host-profile", action="store_true",
                    help="CPU: host time per SparseLinear call inside a small BERT (launches "
                         "stubbed) against the layer alone, planned calls, shared copies and "
                         "the aten ops the sparse model adds")
    ap.add_argument("--layers", type=int, default=2, help="with --model-host-profile")
    ap.add_argument("--seq", type=int, default=128, help="with --model-host-profile")
    ap.add_argument("--batch", type=int, default=1, help="with --model-host-profile")
    ap.add_argument("--cprofile", action="store_true",
                    help="with --host-profile / --model-host-profile: cProfile")
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--dtypes", type=_names(DTYPES), default=None,
                    help="comma-separated, e.g. float32 (default: float16,float32)")
    ap.add_argument("--tokens", type=_ints, default=None,
                    help="the layer rows' N, e.g. 1024 ('' for none; default 1,128,1024)")
    ap.add_argument("--batches", type=_ints, default=None,
                    help="the model rows' batches of 128 tokens ('' for none; default 1,8)")
    a = ap.parse_args(argv)
    profile = a.host_profile or a.model_host_profile
    if (a.smoke or profile) and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        if "triton" in sys.modules:
            raise SystemExit("--smoke and --host-profile run on the CPU under the Triton "
                             "interpreter: set TRITON_INTERPRET=1 before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"
    if profile:
        from bench.host_profile import host_profile, model_host_profile
    if a.host_profile:
        host_profile(a.calls or 2000, a.cprofile)
    if a.model_host_profile:
        from sparsert_triton.nn import SparseLinear
        for dname in ("float32", "float16"):
            for layout in SparseLinear.OUTPUT_LAYOUTS:
                model_host_profile(a.calls or 20, a.layers, a.seq, a.batch, DTYPES[dname],
                                   output_layout=layout, cprofile=a.cprofile)
    if profile:
        return 0
    md = a.results_md if a.results_md is not None else (
        None if a.smoke else "bench/results/RESULTS.md")
    return 0 if run(a.out, md, a.smoke, a.calls or 1, a.dtypes, a.tokens, a.batches) else 1


def _ints(text: str) -> tuple:
    """``"1,128"`` -> (1, 128); ``""`` -> () (none)."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(allowed) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}, "
                                             f"got {text!r}")
        return names
    return parse


if __name__ == "__main__":
    sys.exit(main())
