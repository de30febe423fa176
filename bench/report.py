"""Summarise a DLMC benchmark CSV: geomean speedups, targets, plots, into RESULTS.md.

    python -m bench.report [--csv bench/results/dlmc_h100.csv] [--results-dir bench/results]
                           [--dlmc DIR]

Speedup of ``sparsert`` over a baseline on one case (matrix, sparsity, N, dtype) is
``baseline median_us / sparsert median_us``; a group's figure is the geometric mean over its
cases. Groups: model, N group (ResNet-50 batch 1 / batch 8; Transformer N = 256 / 2048),
sparsity, dtype. ResNet-50 rows are batch 1 when N is the layer's value in
``DIR/rn50_batchsizes.txt`` (``--dlmc``), else when N is the smallest N of that matrix in the
CSV. Writes a section of ``RESULTS.md`` (between ``<!-- dlmc-bench:begin/end -->`` markers;
the rest of the file is kept) and PNG plots: ``speedup_vs_sparsity_<dtype>.png`` and
``roofline_<dtype>.png`` (achieved GFLOP/s, 2 nnz N useful FLOPs, against the H100 fp32 FMA
peak of 67 TFLOP/s and 3.35 TB/s HBM; bytes = nonzero values + X + Y).
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BASELINES = ("dense", "dense_tf32", "cusparse", "triton_csr", "sparsert_default")
SYSTEM = "sparsert"
BEGIN, END = "<!-- dlmc-bench:begin -->", "<!-- dlmc-bench:end -->"
GROUP_ORDER = ("batch1", "batch8", "N=256", "N=2048")


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def _timed(r: dict) -> bool:
    v = r.get("median_us")
    return v is not None and v == v and v > 0


def write_rows(path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    """``rows`` as a CSV file with header ``columns`` (its folder made if missing)."""
    import csv
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


def read_meta(csv_path) -> dict:
    """The ``<stem>.meta.json`` a benchmark writes beside its CSV (device, versions,
    arguments), or ``{}`` when there is none."""
    path = Path(csv_path).with_suffix(".meta.json")
    return json.loads(path.read_text()) if path.exists() else {}


def merge_shards(shards: Sequence[Path], out: Path) -> int:
    """Concatenate the CSVs of a sharded run (``dlmc_bench --shard i/n``) into ``out``, one
    header, rows in shard order, and their ``.meta.json`` into ``out``'s: the first shard's
    device, versions and arguments (``shard`` naming every shard), its start, the last
    finish, and cases, cases run, rows and wall time summed. Returns the number of rows."""
    import csv
    rows, columns, metas = [], None, []
    for p in map(Path, shards):
        if not p.exists():
            raise FileNotFoundError(f"--merge {p}: no such file")
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if columns is not None and reader.fieldnames != columns:
                raise ValueError(f"--merge {p}: columns differ from {shards[0]}'s")
            columns = reader.fieldnames
            rows += list(reader)
        meta = p.with_suffix(".meta.json")
        if meta.exists():
            metas.append(json.loads(meta.read_text()))
    write_rows(out, columns or [], rows)
    if metas:
        merged = dict(metas[0])
        merged["args"] = dict(metas[0].get("args", {}),
                              shard=" + ".join(str(m.get("args", {}).get("shard")) for m in metas))
        for key in ("cases", "cases_run", "rows", "wall_s"):
            if all(isinstance(m.get(key), (int, float)) for m in metas):
                merged[key] = round(sum(m[key] for m in metas), 1)
        merged["finished"] = metas[-1].get("finished")
        merged["error"] = "; ".join(m["error"] for m in metas if m.get("error")) or None
        merged["unreadable"] = {k: v for m in metas for k, v in (m.get("unreadable") or {}).items()}
        Path(out).with_suffix(".meta.json").write_text(json.dumps(merged, indent=1))
    return len(rows)


def load(path) -> List[dict]:
    from sparsert_triton.viz import read_results
    rows = read_results(path)
    for r in rows:
        r["sparsity"] = float(r["sparsity"])
        r["N"] = int(r["N"])
    return rows


def n_groups(rows: Sequence[dict], batch1: Optional[Dict[str, int]] = None) -> None:
    """Set ``r["group"]`` on every row (batch1 / batch8 / N=<n>)."""
    smallest = defaultdict(lambda: math.inf)
    for r in rows:
        if r["model"] == "rn50":
            smallest[r["matrix"]] = min(smallest[r["matrix"]], r["N"])
    for r in rows:
        if r["model"] == "rn50":
            b1 = (batch1 or {}).get(r["matrix"], smallest[r["matrix"]])
            r["group"] = "batch1" if r["N"] == b1 else "batch8" if r["N"] == 8 * b1 else f"N={r['N']}"
        else:
            r["group"] = f"N={r['N']}"


def by_case(rows: Sequence[dict]) -> Dict[tuple, Dict[str, dict]]:
    cases = defaultdict(dict)
    for r in rows:
        cases[(r["model"], r["group"], r["sparsity"], r["dtype"], r["matrix"], r["N"])][r["system"]] = r
    return cases


def speedups(cases, baseline: str, key: str = "median_us", where=lambda k: True) -> List[float]:
    out = []
    for k, sysrows in cases.items():
        s, b = sysrows.get(SYSTEM), sysrows.get(baseline)
        if where(k) and s and b and _timed(s) and _timed(b) and s.get(key) and b.get(key):
            out.append(b[key] / s[key])
    return out


def _group_sort(k):
    model, group, sp, dtype = k
    g = GROUP_ORDER.index(group) if group in GROUP_ORDER else 9
    return (dtype != "float32", dtype, model, g, group, sp)


def summary(cases) -> List[dict]:
    """One row per (model, N group, sparsity, dtype): case count and geomean speedups."""
    groups = sorted({k[:4] for k in cases}, key=_group_sort)
    out = []
    for g in groups:
        sel = {k: v for k, v in cases.items() if k[:4] == g}
        row = {"model": g[0], "group": g[1], "sparsity": g[2], "dtype": g[3],
               "cases": sum(1 for v in sel.values() if SYSTEM in v and _timed(v[SYSTEM]))}
        for b in BASELINES:
            row[b] = geomean(speedups(sel, b))
        row["eager_vs_dense"] = geomean(speedups(sel, "dense", "eager_us"))
        row["sparsert_us"] = _median([v[SYSTEM]["median_us"] for v in sel.values()
                                      if SYSTEM in v and _timed(v[SYSTEM])])
        row["sparsert_eager_us"] = _median([v[SYSTEM]["eager_us"] for v in sel.values()
                                            if SYSTEM in v and _timed(v[SYSTEM]) and v[SYSTEM]["eager_us"]])
        out.append(row)
    return out


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return math.nan
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


def targets(cases, rows) -> List[dict]:
    """The issue's targets: each with its measured figure and whether it is met."""
    out = []

    def add(text, vals, need):
        v = geomean(vals)
        out.append({"target": text, "value": v, "need": need, "cases": len(vals),
                    "met": None if not vals else v >= need})

    large = lambda k: k[3] == "float32" and ((k[0] == "transformer" and k[1] == "N=2048")
                                             or (k[0] == "rn50" and k[1] == "batch8"))
    b1 = lambda k: k[3] == "float32" and k[0] == "rn50" and k[1] == "batch1"
    levels = sorted({k[2] for k in cases if k[3] == "float32"})
    for sp, need in ((0.9, 3.4), (0.95, 5.4)):
        add(f"large (Transformer N=2048, RN50 batch 8), fp32, {sp:g}: vs dense",
            speedups(cases, "dense", where=lambda k, sp=sp: large(k) and abs(k[2] - sp) < 1e-9), need)
    add("large, fp32, 0.95: vs dense_tf32",
        speedups(cases, "dense_tf32", where=lambda k: large(k) and abs(k[2] - 0.95) < 1e-9), 1.0)
    for sp, need in ((0.9, 2.0), (0.95, 3.0)):
        add(f"RN50 batch 1, fp32, {sp:g}: vs dense",
            speedups(cases, "dense", where=lambda k, sp=sp: b1(k) and abs(k[2] - sp) < 1e-9), need)
    for base, need in (("cusparse", 3.0), ("triton_csr", 1.5)):
        for sp in levels:
            add(f"all, fp32, {sp:g}: vs {base}",
                speedups(cases, base, where=lambda k, sp=sp: k[3] == "float32" and abs(k[2] - sp) < 1e-9),
                need)
    comp = [r["compile_s"] for r in rows if r["system"] == SYSTEM and r.get("compile_s") is not None]
    if comp:
        out.append({"target": "cold compile of the tuned build, median seconds (<= 10)",
                    "value": _median(comp), "need": 10.0, "cases": len(comp),
                    "met": _median(comp) <= 10.0, "lower": True})
        out.append({"target": "cold compile of the tuned build, largest seconds (<= 60)",
                    "value": max(comp), "need": 60.0, "cases": len(comp),
                    "met": max(comp) <= 60.0, "lower": True})
    return out


def break_even(cases) -> List[str]:
    """Half dtypes: the lowest sparsity where sparsert's geomean beats dense, per model group."""
    lines = []
    for dtype in ("float16", "bfloat16"):
        for model, group in sorted({(k[0], k[1]) for k in cases if k[3] == dtype},
                                   key=lambda mg: (mg[0], _group_sort((mg[0], mg[1], 0, dtype)))):
            levels = sorted({k[2] for k in cases if k[:2] == (model, group) and k[3] == dtype})
            won = [sp for sp in levels if geomean(speedups(
                cases, "dense", where=lambda k, sp=sp: k[:4] == (model, group, sp, dtype))) >= 1.0]
            lines.append(f"- {dtype} {model} {group}: " + (f"sparsert beats dense from {100 * min(won):g}% "
                                                           f"sparsity (levels run: "
                                                           f"{', '.join(f'{100 * s:g}%' for s in levels)})"
                                                           if won else "dense wins at every level run ("
                                                           + ", ".join(f"{100 * s:g}%" for s in levels) + ")"))
    return lines


def _x(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}x"


def _us(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"


def plots(rows: Sequence[dict], results_dir: Path) -> List[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sparsert_triton import viz
    timed = [dict(r, matrix=f"{r['model']}/{r['sparsity']:g}/{r['matrix']}") for r in rows if _timed(r)]
    paths = []
    for dtype in sorted({r["dtype"] for r in timed}, key=lambda d: (d != "float32", d)):
        sel = [r for r in timed if r["dtype"] == dtype]
        groups = sorted({(r["model"], r["group"]) for r in sel},
                        key=lambda mg: _group_sort((mg[0], mg[1], 0, dtype)))
        if not groups:
            continue
        fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
        bases = [b for b in ("dense", "dense_tf32", "cusparse", "triton_csr")
                 if any(r["system"] == b for r in sel)]
        for ax, (model, group) in zip(axes[0], groups):
            viz.speedup_chart([r for r in sel if (r["model"], r["group"]) == (model, group)],
                              SYSTEM, bases, ax=ax, title=f"{model} {group} ({dtype})")
        fig.tight_layout()
        p = results_dir / f"speedup_vs_sparsity_{dtype}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
        systems = [s for s in (SYSTEM, "sparsert_default", "dense", "dense_tf32", "cusparse", "triton_csr")
                   if any(r["system"] == s for r in sel)]
        ax = viz.roofline(sel, systems, title=f"DLMC roofline ({dtype}; roof: fp32 FMA peak, HBM)")
        p = results_dir / f"roofline_{dtype}.png"
        ax.figure.savefig(p, dpi=110)
        plt.close(ax.figure)
        paths.append(p)
    return paths


def markdown(rows, cases, csv_path: Path, plot_paths: Sequence[Path], meta: Optional[dict]) -> str:
    L = [BEGIN, "## DLMC benchmark: sparsert against dense and sparse peers", ""]
    if meta:
        dev = meta.get("device", {})
        v = meta.get("versions", {})
        L.append(f"Device: {dev.get('name', '?')} ({dev.get('capability', '?')}, "
                 f"{dev.get('sms', '?')} SMs, CUDA {dev.get('cuda', '?')}); torch {v.get('torch', '?')}, "
                 f"triton {v.get('triton', '?')}, sparsert {v.get('sparsert', '?')}. "
                 f"Run {meta.get('started', '?')}, {meta.get('cases_run', '?')}/{meta.get('cases', '?')} "
                 f"cases in {meta.get('wall_s', '?')} s.")
        a = meta.get("args", {})
        if a:
            L.append(f"Arguments: subset {a.get('subset')}, sparsities {a.get('sparsities')}, dtypes "
                     f"{a.get('dtypes')}, tune budget {a.get('tune_budget')} s per case, "
                     f"max compile {a.get('max_compile_s')} s.")
        if meta.get("unreadable"):
            L.append("Skipped, unreadable: " + "; ".join(
                f"`{Path(p).name}` ({why})" for p, why in sorted(meta["unreadable"].items())) + ".")
        L.append("")
    n_cases = sum(1 for v in cases.values() if SYSTEM in v and _timed(v[SYSTEM]))
    L += [f"Source: `{csv_path.name}` ({len(rows)} rows, {n_cases} cases timed). Times are CUDA-graph "
          "medians; speedup = baseline time / sparsert time, geometric mean over the group's cases. "
          "`dense` is fp32 with TF32 off (or the half dtype on tensor cores); `sparsert_default` "
          "is the untuned heuristic schedule; `eager vs dense` compares per-call latency from "
          "Python.", ""]
    L += ["| dtype | model | N | sparsity | cases | vs dense | vs dense_tf32 | vs cusparse | "
          "vs triton_csr | vs default | eager vs dense | sparsert us | sparsert eager us |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary(cases):
        L.append(f"| {s['dtype']} | {s['model']} | {s['group']} | {100 * s['sparsity']:g}% | {s['cases']} | "
                 f"{_x(s['dense'])} | {_x(s['dense_tf32'])} | {_x(s['cusparse'])} | {_x(s['triton_csr'])} | "
                 f"{_x(s['sparsert_default'])} | {_x(s['eager_vs_dense'])} | {_us(s['sparsert_us'])} | "
                 f"{_us(s['sparsert_eager_us'])} |")
    L += ["", "### Targets (issue 3)", "", "| target | need | measured | cases | met |", "|---|---|---|---|---|"]
    for t in targets(cases, rows):
        lower = t.get("lower")
        need = f"<= {t['need']:g} s" if lower else f">= {t['need']:g}x"
        val = (f"{t['value']:.1f} s" if lower else _x(t["value"])) if t["cases"] else "-"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        L.append(f"| {t['target']} | {need} | {val} | {t['cases']} | {met} |")
    be = break_even(cases)
    if be:
        L += ["", "### Half precision: break-even against tensor-core dense", ""] + be
    bad = [r for r in rows if not _timed(r)]
    if bad:
        L += ["", f"### Not timed ({len(bad)} rows: failed check or error)", ""]
        for r in bad[:20]:
            L.append(f"- {r['model']}/{r['sparsity']:g}/{r['matrix']} N={r['N']} {r['dtype']} "
                     f"{r['system']}: {r.get('schedule', '')[:160]}")
        if len(bad) > 20:
            L.append(f"- ... and {len(bad) - 20} more")
    if plot_paths:
        L += ["", "### Plots", ""] + [f"![{p.stem}]({p.name})" for p in plot_paths]
    a = (meta or {}).get("args", {})
    run = (f"python -m bench.dlmc_bench --dlmc <DLMC dir> --subset {a.get('subset', 'quick')}"
           + (f" --per-shape {a['per_shape']}" if a.get("per_shape") else "")
           + (f" --dtypes {','.join(a['dtypes'])}" if a.get("dtypes") else "")
           + (f" --tune-budget {a['tune_budget']:g}" if a.get("tune_budget") else "")
           + (f" --max-compile-s {a['max_compile_s']:g}" if a.get("max_compile_s") else "")
           + (" --shard i/n  # one device call per shard; concatenate the CSVs"
              if a.get("shard") else " --out bench/results/dlmc_h100.csv"))
    L += ["", "### Reproduce", "", "```", run,
          "python -m bench.report --csv bench/results/dlmc_h100.csv --results-dir bench/results "
          "--dlmc <DLMC dir>", "```", END]
    return "\n".join(L) + "\n"


def write_marked(path: Path, section: str):
    """Replace the section of ``path`` between the marker lines that ``section`` starts and
    ends with (or append it; create the file if needed)."""
    begin, end = section.splitlines()[0], section.rstrip("\n").splitlines()[-1]
    text = path.read_text() if path.exists() else "# Results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text if text.endswith("\n") else text + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default="bench/results/dlmc_h100.csv")
    ap.add_argument("--results-dir", default="bench/results")
    ap.add_argument("--dlmc", help="DLMC folder, for rn50_batchsizes.txt (batch 1 vs batch 8)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar="SHARD.csv",
                    help="first write --csv (and its meta) from the CSVs of a sharded run")
    ap.add_argument("--merge-only", action="store_true", help="with --merge: stop after it")
    a = ap.parse_args(argv)
    csv_path, out = Path(a.csv), Path(a.results_dir)
    if a.merge:
        try:
            n = merge_shards(a.merge, csv_path)
        except (FileNotFoundError, ValueError) as ex:
            ap.error(str(ex))
        print(f"[report] {n} rows from {len(a.merge)} shards -> {csv_path}")
        if a.merge_only:
            return 0
    if not csv_path.exists():
        ap.error(f"--csv {csv_path}: no such file")
    out.mkdir(parents=True, exist_ok=True)
    rows = load(csv_path)
    batch1 = None
    if a.dlmc:
        from .dlmc_bench import read_batch_sizes
        batch1 = read_batch_sizes(a.dlmc)
    n_groups(rows, batch1)
    cases = by_case(rows)
    meta = read_meta(csv_path)
    paths = [] if a.no_plots else plots(rows, out)
    section = markdown(rows, cases, csv_path, paths, meta)
    write_marked(out / "RESULTS.md", section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
