"""Summaries of the convolution and end-to-end benchmark CSVs for ``RESULTS.md``, and the
README's results block from the canonical CSVs.

    python -m bench.summaries --conv bench/results/conv_h100.csv \
        --e2e bench/results/e2e_h100.csv [--e2e ...] --results bench/results/RESULTS.md
    python -m bench.summaries --readme README.md

Each summary replaces its own marked section (``<!-- conv-bench:begin/end -->``,
``<!-- e2e-bench:begin/end -->``, ``<!-- readme-results:begin/end -->``). Speedup = baseline
time / sparsert time, geometric mean. The README block is computed from ``CANONICAL`` (the
files RESULTS.md's tables come from); a test checks that the README holds that block.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

from bench.report import geomean, write_marked

CONV_BASELINES = ("cudnn", "cudnn_tf32", "im2col_sparsert")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The canonical results, the sources of RESULTS.md's tables and of the README's block.
CANONICAL = {"dlmc": "dlmc_h100.csv", "conv": "conv_h100.csv",
             "e2e": ("e2e_bert_h100.csv", "e2e_rn50_h100.csv"), "eager": "eager_h100.csv"}


def _rows(path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def conv_cases(rows: Sequence[dict]) -> Dict[tuple, Dict[str, float]]:
    """(layer, sparsity, batch, dtype) -> {system: median us} for timed rows."""
    cases: Dict[tuple, Dict[str, float]] = defaultdict(dict)
    for r in rows:
        t = _num(r["median_us"])
        if t == t:
            cases[(r["layer"], r["sparsity"], int(r["batch"]), r["dtype"])][r["system"]] = t
    return cases


def conv_markdown(rows: Sequence[dict], source: str, target: float = 5.0) -> str:
    cases = conv_cases(rows)
    groups = defaultdict(list)
    for (layer, sp, batch, dtype), v in cases.items():
        groups[(dtype, sp, batch)].append(v)
    L = ["<!-- conv-bench:begin -->", "## Sparse 3x3 convolutions (DLMC ResNet-50, direct, implicit im2col)", "",
         f"Source: `{source}` ({len(rows)} rows). CUDA-graph medians; speedup = baseline / "
         "`sparsert` (direct sparse convolution, best of a few schedules), geometric mean over "
         "the layers. `cudnn` is fp32 with TF32 off (or the half dtype), each cuDNN time the "
         "faster of its heuristic algorithm and its benchmark mode's pick; `im2col_sparsert` is "
         "`F.unfold` then our sparse matmul. Layers at their true spatial sizes, padding 1, "
         "stride 2 in the projection blocks of groups 2-4.", "",
         "| dtype | sparsity | batch | layers | vs cudnn | vs cudnn_tf32 | vs im2col_sparsert | "
         "best layer vs cudnn | worst layer vs cudnn |", "|---|---|---|---|---|---|---|---|---|"]
    for (dtype, sp, batch), vs in sorted(groups.items()):
        def sp_of(base):
            return [v[base] / v["sparsert"] for v in vs if base in v and "sparsert" in v]
        cd = sp_of("cudnn")
        cells = [f"{geomean(sp_of(b)):.2f}x" if sp_of(b) else "-" for b in CONV_BASELINES]
        L.append(f"| {dtype} | {float(sp) * 100:g}% | {batch} | {len(vs)} | " + " | ".join(cells)
                 + (f" | {max(cd):.2f}x | {min(cd):.2f}x |" if cd else " | - | - |"))
    f32 = [v["cudnn"] / v["sparsert"] for (l, sp, b, d), v in cases.items()
           if d == "float32" and abs(float(sp) - 0.9) < 1e-9 and "cudnn" in v and "sparsert" in v]
    if f32:
        g = geomean(f32)
        L += ["", f"Target (issue 4): geometric mean >= {target:g}x over cuDNN fp32 (TF32 off) on the "
              f"90%-sparse layers: measured {g:.2f}x over {len(f32)} layer/batch cases: "
              + ("**met**." if g >= target else "**not met**.")]
    L.append("<!-- conv-bench:end -->")
    return "\n".join(L) + "\n"


def e2e_markdown(rows: Sequence[dict], sources: Sequence[str]) -> str:
    L = ["<!-- e2e-bench:begin -->", "## End to end: 90%-pruned models, dense masked vs sparsified", "",
         f"Sources: {', '.join(f'`{s}`' for s in sources)}. `graph` times one CUDA-graph replay of "
         "the whole forward (GPU time); `launch` is the per-call latency of the eager Python "
         "forward (every layer launched from Python). Outputs checked against the dense masked "
         "model (`rel err`).", "",
         "| model | batch | mode | timing | dense ms | sparse ms | speedup | rel err | sparse layers |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['model']} | {r['batch']} | {r['mode']} | {r['timing']} | "
                 f"{_num(r['dense_ms']):.3f} | {_num(r['sparse_ms']):.3f} | {_num(r['speedup']):.2f}x | "
                 f"{_num(r['rel_err']):.1e} | {r['sparse_layers']} |")
    L.append("<!-- e2e-bench:end -->")
    return "\n".join(L) + "\n"


def _dlmc_lines(dlmc_csv: Path) -> List[str]:
    """fp32 geomean speedups per sparsity (large layers, RN50 batch 1, all) and where half
    precision beats tensor-core dense."""
    from bench import report
    rows = report.load(dlmc_csv)
    report.n_groups(rows)
    cases = report.by_case(rows)
    large = lambda k: (k[0], k[1]) in (("transformer", "N=2048"), ("rn50", "batch8"))
    b1 = lambda k: (k[0], k[1]) == ("rn50", "batch1")
    anything = lambda k: True
    n = sum(1 for k, v in cases.items() if report.SYSTEM in v)
    L = [f"DLMC suite (`{dlmc_csv.name}`, {n} cases; RESULTS.md has every group): geometric-mean "
         "speedup of the tuned kernel in fp32.", "",
         "| sparsity | vs dense fp32 (large*) | vs dense fp32 (RN50 batch 1) | "
         "vs dense TF32 (large*) | vs cuSPARSE (all) |", "|---|---|---|---|---|"]
    for sp in sorted({k[2] for k in cases if k[3] == "float32"}):
        def g(base, where):
            return report._x(geomean(report.speedups(cases, base, where=lambda k: (
                k[3] == "float32" and abs(k[2] - sp) < 1e-9 and where(k)))))
        L.append(f"| {100 * sp:g}% | {g('dense', large)} | {g('dense', b1)} | "
                 f"{g('dense_tf32', large)} | {g('cusparse', anything)} |")
    # report.break_even: "- float16 rn50 batch1: sparsert beats dense from 98% sparsity (levels ...)"
    half = [line[2:].split(" (levels")[0].replace(": sparsert beats dense", "")
            for line in report.break_even(cases) if "beats dense" in line]
    L += ["", "*large: Transformer N = 2048 and ResNet-50 batch 8. Against tensor-core dense in "
          "half precision, sparse wins " + ("only in " + "; ".join(half) if half else "in no group")
          + "."]
    return L


def _conv_line(conv_csv: Path) -> str:
    cases = conv_cases(_rows(conv_csv))

    def g(dtype, batch=None):
        return geomean([v["cudnn"] / v["sparsert"] for (_, sp, b, d), v in cases.items()
                        if d == dtype and abs(float(sp) - 0.9) < 1e-9 and batch in (None, b)
                        and "cudnn" in v and "sparsert" in v])
    half = [f"{g(d, 1):.2f}x / {g(d, 8):.2f}x ({d})" for d in ("float16", "bfloat16")
            if any(k[3] == d for k in cases)]
    return (f"Sparse 3x3 convolutions at 90% (`{conv_csv.name}`): {g('float32', 1):.2f}x (batch 1) "
            f"and {g('float32', 8):.2f}x (batch 8) over cuDNN fp32, {g('float32'):.2f}x geomean "
            "(SparseRT reports over 5x)" + ("; against cuDNN in half precision "
                                           + ", ".join(half) + " at batch 1 / 8" if half else "")
            + ".")


def _e2e_line(e2e_csvs: Sequence[Path]) -> str:
    rows = [r for p in e2e_csvs for r in _rows(p)]
    graph, launch = [], []
    for model, name in (("bert", "BERT-base encoder layer"), ("resnet50", "ResNet-50")):
        for timing, parts in (("graph", graph), ("launch", launch)):
            x = [_num(r["speedup"]) for r in rows if r["model"] == model and r["timing"] == timing
                 and (timing == "graph" or r["mode"] == "eager")]
            if x:
                parts.append(f"{name} {min(x):.2f}-{max(x):.2f}x")
    return (f"End to end under CUDA graphs ({', '.join(f'`{p.name}`' for p in e2e_csvs)}): "
            + ", ".join(graph) + " over the dense masked model (eager and torch.compile, batch 1 "
            "and 8); called eagerly from Python (batch 1 and 8, host path and GPU time): "
            + ", ".join(launch) + ".")


def _eager_line(eager_csv: Path) -> str:
    """The whole-model rows of ``eager_bench``: dense / sparse eager time per dtype and N."""
    rows = [r for r in _rows(eager_csv) if not r["layer"] and "/" not in r["model"]]
    eager = {(r["dtype"], int(r["N"]), r["system"]): _num(r["eager_us"]) for r in rows}
    Ns = sorted({int(r["N"]) for r in rows})
    parts = [" / ".join(f"{eager[(d, n, 'dense')] / eager[(d, n, 'sparse')]:.2f}x" for n in Ns)
             + f" ({d})" for d in ("float16", "float32")
             if all((d, n, s) in eager for n in Ns for s in ("dense", "sparse"))]
    return (f"Called eagerly from Python, no CUDA graph (`{eager_csv.name}`): transformers' "
            f"BERT-base with every Linear at 90% runs at {' and '.join(parts)} the dense "
            f"model's speed at {' / '.join(map(str, Ns))} tokens (dense time / sparse time).")


def readme_markdown(results_dir: Path = RESULTS_DIR) -> str:
    """The README's results block, from the canonical CSVs in ``results_dir``."""
    d = Path(results_dir)
    L = ["<!-- readme-results:begin -->",
         "<!-- written by `python -m bench.summaries --readme README.md` from bench/results/ -->", ""]
    L += _dlmc_lines(d / CANONICAL["dlmc"])
    L += ["", _conv_line(d / CANONICAL["conv"]), "",
          _e2e_line([d / p for p in CANONICAL["e2e"]]), "", _eager_line(d / CANONICAL["eager"]),
          "<!-- readme-results:end -->"]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.summaries", description=__doc__.split("\n\n")[0])
    ap.add_argument("--conv", help="conv_bench CSV")
    ap.add_argument("--e2e", action="append", default=[], help="e2e CSV (repeatable)")
    ap.add_argument("--results", default="bench/results/RESULTS.md")
    ap.add_argument("--readme", help="rewrite this README's results block from the canonical CSVs")
    a = ap.parse_args(argv)
    out = Path(a.results)
    if a.conv:
        write_marked(out, conv_markdown(_rows(a.conv), Path(a.conv).name))
    if a.e2e:
        rows = [r for p in a.e2e for r in _rows(p)]
        write_marked(out, e2e_markdown(rows, [Path(p).name for p in a.e2e]))
    if a.readme:
        write_marked(Path(a.readme), readme_markdown())


if __name__ == "__main__":
    main()
