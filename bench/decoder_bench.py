"""End to end: a pruned Llama decoder (transformers), dense vs ``sparsify()``d, decode and prefill.

    python -m bench.decoder_bench [--layers 2] [--sparsity 0.5,0.7,0.9] [--batch 1,8]
                                  [--dtype float16] [--prompt 128] [--prefill 512]
                                  [--phases decode,prefill] [--cache auto] [--prune-lm-head]
                                  [--deadline-s S] [--out CSV]
    python -m bench.decoder_bench --report [--out CSV]   # RESULTS.md section only
    python -m bench.decoder_bench --smoke                # CPU, Triton interpreter, tiny model

Model: transformers' ``LlamaForCausalLM`` from a ``LlamaConfig`` of Llama-2-7B width (hidden
4096, intermediate 11008, 32 heads, 32 key/value heads, vocabulary 32000) with ``--layers``
decoder layers, random initialisation (seeded), cast to ``--dtype``. For each ``--sparsity``
every Linear of the decoder layers (q, k, v, o, gate, up, down) is magnitude-pruned
(``bench.models.magnitude_prune_``: the smallest |w| of each weight set to zero); ``lm_head``
stays dense unless ``--prune-lm-head``. The dense system is that pruned model as is (cuBLAS on
the zero-filled weights); the sparse system is ``sparsify(pruned)`` with its defaults.
With few layers the dense parts weigh more than in the full 32-layer model: per decode step
the 4096 x 32000 ``lm_head`` reads 262 MB in fp16, one decoder layer 405 MB. ``--smoke``: the
same code on the CPU (Triton interpreter) with a tiny config (hidden 64, intermediate 128,
4 heads, vocabulary 128), prompt <= 8 and prefill <= 16 tokens.

Measured in one process, dense and sparse alike, on the same token ids:

* ``decode``: one decode step (one new token per sequence, ``logits_to_keep=1``) at batch
  ``B`` after a ``--prompt``-token prompt already in the KV cache. The cache is transformers'
  ``StaticCache`` (``--prompt`` + 2 slots; attention runs over all, the unused masked) where the
  installed version builds one (``--cache auto``), else its
  ``DynamicCache`` (the ``cache`` column says which). Each timed call is the step followed by
  a rewind of the cache by one token, so every call decodes position ``--prompt`` again.
* ``prefill``: a ``--prefill``-token forward pass at batch 1 into an empty cache
  (``logits_to_keep=1``, as ``generate`` runs it), the cache rewound after each call.

Timing (``bench.timing``): ``graph``: replays of a CUDA graph of the call (GPU time, launch
cost hidden; static cache only); ``events``: CUDA events around eager calls where capture
fails (the failure is printed and kept in the meta file); ``eager``: host wall clock around
back-to-back calls (what a Python user sees). Where one system has a graph time and the other
does not, both get ``events`` rows. On the CPU (``--smoke``) one call's wall time, ``eager``:
the times mean nothing there, the checks do.

Checks (a mismatch is printed, its timings skipped, and the exit status is 1): the dense
model's decode logits against its own full forward pass without a cache (the cache path is
right), a repeated step against the first (the rewind is right), and the sparse logits (the
prompt's and two decode steps' per batch; the whole prefill's) against the dense pruned
model's: relative Frobenius error ``||L_sparse - L_dense||_F / ||L_dense||_F`` under
``TOLERANCE[dtype]``.

CSV columns: ``model,layers,dtype,sparsity,phase,batch,context,tokens,cache,system,method,
median_us,ratio_vs_dense,logits_rel_err``: ``context`` tokens already in the cache, ``tokens``
new tokens per sequence per call (decode 1, prefill ``--prefill``), ``median_us`` per call
(a decode step's time is the per-token latency), ``ratio_vs_dense`` = dense median_us / this
row's (same method; > 1 is faster than dense), ``logits_rel_err`` the sparse-vs-dense error
above (empty for dense). A ``.meta.json`` beside the CSV: device, versions, arguments, the
transformers version and cache used, graph-capture failures, skipped and mismatching cases
(written at the start too, with ``finished: false``, for a run stopped by a time limit).
"""
from __future__ import annotations

import argparse
import copy
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from bench.report import read_meta, write_marked

COLUMNS = ["model", "layers", "dtype", "sparsity", "phase", "batch", "context", "tokens", "cache",
           "system", "method", "median_us", "ratio_vs_dense", "logits_rel_err"]
MODELS = {   # LlamaConfig fields
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=128),        # --smoke (interpreter)
}
#: relative Frobenius error of the logits allowed (different accumulation orders)
TOLERANCE = {"float16": 2e-2, "bfloat16": 4e-2, "float32": 1e-4}
CHECK_STEPS = 2            # decode steps whose logits are checked
#: seconds one (dtype, sparsity) block is assumed to take before one has been measured
FIRST_BLOCK_S = {"llama2-7b": 120.0, "tiny": 0.0}
RESULTS = Path(__file__).parent / "results"
BEGIN, END = "<!-- decoder-bench:begin -->", "<!-- decoder-bench:end -->"


# ---------------------------------------------------------------- model and cache

def build_model(model: str, layers: int, dtype, device, max_positions: int, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` (see module doc), eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    config = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=max_positions,
                         tie_word_embeddings=False, **MODELS[model])
    torch.manual_seed(seed)
    with torch.device(device):
        m = LlamaForCausalLM(config)
    return m.to(dtype).eval()


def pruned_copy(base, sparsity: float, prune_lm_head: bool):
    """A copy of ``base`` whose decoder-layer Linears (and lm_head if asked) are pruned."""
    from bench.models import magnitude_prune_
    m = copy.deepcopy(base)
    magnitude_prune_(m.model.layers, sparsity)
    if prune_lm_head:
        magnitude_prune_(m.lm_head, sparsity)
    return m


class Runner:
    """Calls a causal LM with a KV cache across transformers versions: the cache's keyword
    (``cache`` from 5.2x, ``past_key_values`` before), ``StaticCache``'s constructor, and how
    a cache is stepped back (static layers' ``cumulative_length`` tensor, moved on the device
    so a CUDA graph can hold it; older static caches write where ``cache_position`` says;
    dynamic caches ``crop``)."""

    def __init__(self, model, cache: str = "auto"):
        import transformers
        self.model, self.config = model, model.config
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.positions_kw = "cache_position" in params
        self.version = transformers.__version__
        if cache not in ("auto", "static", "dynamic"):
            raise ValueError(f"cache must be 'auto', 'static' or 'dynamic', got {cache!r}")
        self.kind, self.why = cache, ""
        if cache != "dynamic":
            try:
                self.new_cache(1, 2)
                self.kind = "static"
            except Exception as e:         # no StaticCache in this transformers
                if cache == "static":
                    raise
                self.kind, self.why = "dynamic", f"{type(e).__name__}: {str(e)[:160]}"

    def new_cache(self, batch: int, max_len: int):
        import transformers
        if self.kind == "dynamic":
            cls = transformers.DynamicCache
            return cls(**({"config": self.config}
                          if "config" in inspect.signature(cls.__init__).parameters else {}))
        cls = transformers.StaticCache
        p = inspect.signature(cls.__init__).parameters
        dev = self.model.lm_head.weight.device
        kw = dict(config=self.config, max_cache_len=max_len)
        kw.update({k: v for k, v in (("max_batch_size", batch), ("batch_size", batch),
                                     ("device", dev), ("dtype", self.model.dtype)) if k in p})
        return cls(**kw)

    def forward(self, ids, cache, start: int, logits_to_keep: int = 0, positions=None):
        """Logits of ``ids`` (B, T) at positions ``start..start+T-1`` (``positions``: those as a
        (B, T) tensor made once, for a call captured in a CUDA graph)."""
        import torch
        B, T = ids.shape
        if positions is None:
            positions = torch.arange(start, start + T, device=ids.device).expand(B, T)
        kw = {self.cache_kw: cache, "use_cache": cache is not None, "position_ids": positions,
              "logits_to_keep": logits_to_keep}
        if self.positions_kw and cache is not None:
            kw["cache_position"] = positions[0]
        return self.model(input_ids=ids, **kw).logits

    def rewind(self, cache, tokens: int):
        """Step ``cache`` back ``tokens`` (the next call overwrites them)."""
        import torch
        layers = getattr(cache, "layers", None) or []
        lengths = [getattr(layer, "cumulative_length", None) for layer in layers]
        if layers and all(torch.is_tensor(n) for n in lengths):
            for n in lengths:
                n.sub_(tokens)
        elif self.positions_kw and self.kind == "static":
            pass                       # positions come from cache_position: rewriting them
        else:
            cache.crop(-tokens)


def rel_err(a, b) -> float:
    """||a - b||_F / ||b||_F in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def host_reads(fn: Callable) -> List[str]:
    """The ops of ``fn()`` that read a tensor's value on the host (``.item()``, ``bool(t)``,
    ``torch.equal``, ``nonzero``): each would stop a CUDA graph capture."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    aten, seen = torch.ops.aten, []
    reads = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
             aten.nonzero.default}

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in reads:
                seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        fn()
    return seen


# ---------------------------------------------------------------- one system

class System:
    """One model (dense or sparse) and the calls that are checked and timed."""

    def __init__(self, name: str, model, runner: Runner, tokens: Dict[str, object]):
        self.name, self.model, self.run, self.tokens = name, model, runner, tokens

    def decoded(self, batch: int):
        """A cache holding the prompt (batch ``batch``), and the prompt's logits."""
        ids = self.tokens["prompt"][:batch]
        cache = self.run.new_cache(batch, ids.shape[1] + CHECK_STEPS)
        return cache, self.run.forward(ids, cache, 0)

    def check_decode(self, batch: int, tol: float) -> Dict[str, object]:
        """Prompt logits and CHECK_STEPS decode steps' logits. For the dense system (the
        cache code is the same for both) also asserts that the cached steps match a
        cache-free forward pass of prompt + steps, and that a step after a rewind repeats
        the first (the timed calls rewind)."""
        import torch
        prompt, nxt = self.tokens["prompt"][:batch], self.tokens["next"][:batch]
        P = prompt.shape[1]
        cache, first = self.decoded(batch)
        steps = [self.run.forward(nxt[:, i:i + 1], cache, P + i) for i in range(CHECK_STEPS)]
        decode = torch.cat(steps, dim=1)
        if self.name == "dense":
            self.run.rewind(cache, CHECK_STEPS)
            err = rel_err(self.run.forward(nxt[:, :1], cache, P), steps[0])
            if not err < tol / 10:
                raise AssertionError(f"dense: a decode step after a rewind differs from the "
                                     f"first (relative error {err:.2e})")
            full = self.run.forward(torch.cat([prompt, nxt[:, :CHECK_STEPS]], 1), None, 0)
            err = rel_err(decode, full[:, P:])
            if not err < tol:
                raise AssertionError(f"dense: cached decode logits differ from a forward pass "
                                     f"without a cache (relative error {err:.2e})")
        return {"prompt": first, "decode": decode}

    def check_prefill(self):
        ids = self.tokens["prefill"]
        return self.run.forward(ids, self.run.new_cache(1, ids.shape[1]), 0)

    def decode_call(self, batch: int) -> Callable:
        """A decode step at position ``--prompt`` and the rewind, on a fresh cache."""
        import torch
        nxt = self.tokens["next"][:batch, :1].clone()
        cache, _ = self.decoded(batch)
        P = self.tokens["prompt"].shape[1]
        pos = torch.full((batch, 1), P, device=nxt.device, dtype=torch.long)

        def step():
            self.run.forward(nxt, cache, P, logits_to_keep=1, positions=pos)
            self.run.rewind(cache, 1)
        return step

    def prefill_call(self) -> Callable:
        import torch
        ids = self.tokens["prefill"]
        T = ids.shape[1]
        cache = self.run.new_cache(1, T)
        pos = torch.arange(T, device=ids.device).expand(1, T)

        def prefill():
            self.run.forward(ids, cache, 0, logits_to_keep=1, positions=pos)
            self.run.rewind(cache, T)
        return prefill


def measure(make_call: Callable, methods: Sequence[str], device, failures: list,
            label: str) -> Dict[str, float]:
    """{method: median us per call}; each method on a fresh call (fresh cache). A graph
    capture that fails is recorded in ``failures`` and left out."""
    import torch
    if device.type != "cuda":
        call = make_call()
        t0 = time.perf_counter()
        call()
        return {"eager": (time.perf_counter() - t0) * 1e6}
    from bench.timing import eager_us, events_median_us, graph_median_us
    out = {}
    for m in methods:
        call = make_call()
        if m == "eager":
            out[m] = eager_us(call)
            continue
        try:
            out[m] = (graph_median_us if m == "graph" else events_median_us)([call], replays=15)
        except Exception as e:
            if m != "graph":
                raise
            try:
                torch.cuda.synchronize()
            except Exception:
                pass
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:200]}")
    return out


# ---------------------------------------------------------------- the benchmark

class Deadline:
    """Skip work that would not finish before ``seconds`` from now (None: never)."""

    def __init__(self, seconds: Optional[float]):
        self.end = None if seconds is None else time.time() + seconds
        self.skipped: List[str] = []

    def allows(self, what: str, cost_s: float) -> bool:
        if self.end is None or time.time() + cost_s <= self.end:
            return True
        self.skipped.append(what)
        return False


def run(model: str, layers: int, dtypes: Sequence[str], sparsities: Sequence[float],
        batches: Sequence[int], prompt: int, prefill: int, out: Path, device: str = "cuda",
        cache: str = "auto", prune_lm_head: bool = False, deadline: Optional[Deadline] = None,
        log=print, seed: int = 0, phases: Sequence[str] = ("decode", "prefill")) -> dict:
    """Build, prune, sparsify, check and time (see module doc); write ``out`` after every
    case. Returns ``{"rows", "mismatches", "graph_failures", "skipped", "cache", ...}``."""
    import torch
    from sparsert_triton.nn import sparsify
    dev = torch.device(device)
    if not phases or set(phases) - {"decode", "prefill"}:
        raise ValueError(f"phases must be a list of 'decode' and 'prefill', got {phases!r}")
    if "decode" in phases and not batches:
        raise ValueError("batches: decode needs at least one batch size")
    deadline = deadline or Deadline(None)
    rows, mismatches, failures = [], [], []
    block_s, case_s = FIRST_BLOCK_S.get(model, 60.0), 0.0   # estimates, then the longest seen
    first_block = True
    info = {"rows": rows, "mismatches": mismatches, "graph_failures": failures,
            "skipped": deadline.skipped}
    g = torch.Generator().manual_seed(seed + 1)
    vocab = MODELS[model]["vocab_size"]
    tokens = {k: torch.randint(vocab, shape, generator=g).to(dev) for k, shape in
              (("prompt", (max(batches, default=1), prompt)),
               ("next", (max(batches, default=1), CHECK_STEPS)),
               ("prefill", (1, prefill)))}
    for dtype_name in dtypes:
        if dtype_name not in TOLERANCE:
            raise ValueError(f"dtype must be one of {sorted(TOLERANCE)}, got {dtype_name!r}")
        tol = TOLERANCE[dtype_name]
        base = build_model(model, layers, getattr(torch, dtype_name), dev,
                           max(prompt + CHECK_STEPS, prefill), seed)
        for sp in sparsities:
            block = f"{dtype_name} sparsity {sp:g}"
            if not deadline.allows(block, block_s):
                continue
            t_block = time.time()
            dense_model = pruned_copy(base, sp, prune_lm_head)
            sparse_model, report = sparsify(dense_model, inplace=False)
            n_sparse = len(report.replaced)
            dense = System("dense", dense_model, Runner(dense_model, cache), tokens)
            sparse = System("sparse", sparse_model, Runner(sparse_model, dense.run.kind), tokens)
            info.update(cache=dense.run.kind, cache_note=dense.run.why,
                        transformers=dense.run.version, sparse_layers=n_sparse,
                        attn_implementation=getattr(base.config, "_attn_implementation", None))
            log(f"{block}: {n_sparse} sparse layers, {dense.run.kind} cache"
                + (f" ({dense.run.why})" if dense.run.why else ""))
            cases = ([("decode", b, prompt, 1) for b in batches] if "decode" in phases else []) \
                + ([("prefill", 1, 0, prefill)] if "prefill" in phases else [])
            for phase, batch, context, ntok in cases:
                label = f"{block} {phase} batch {batch}"
                if not deadline.allows(label, case_s):
                    continue
                t_case = time.time()
                with torch.no_grad():
                    try:
                        if phase == "decode":
                            ref = dense.check_decode(batch, tol)
                            got = sparse.check_decode(batch, tol)
                            err = max(rel_err(got[k], ref[k]) for k in ref)
                        else:
                            err = rel_err(sparse.check_prefill(), dense.check_prefill())
                        if not err < tol:
                            raise AssertionError(f"sparse logits differ from dense: relative "
                                                 f"error {err:.2e} (tolerance {tol:g})")
                    except AssertionError as e:
                        mismatches.append(f"{label}: {e}")
                        log(f"  MISMATCH {label}: {e}")
                        continue
                    methods = ("graph", "eager") if dense.run.kind == "static" else \
                        ("events", "eager")
                    times = {}
                    for sys_ in (dense, sparse):
                        mk = (lambda s=sys_, b=batch: s.decode_call(b)) if phase == "decode" \
                            else sys_.prefill_call
                        times[sys_.name] = (mk, measure(mk, methods, dev, failures,
                                                        f"{label} {sys_.name}"))
                    if dev.type == "cuda" and any("graph" not in t for _, t in times.values()):
                        for name, (mk, t) in times.items():   # events rows for both systems
                            if "events" not in t:
                                t.update(measure(mk, ("events",), dev, failures,
                                                 f"{label} {name}"))
                base_row = dict(model=model, layers=layers, dtype=dtype_name, sparsity=sp,
                                phase=phase, batch=batch, context=context, tokens=ntok,
                                cache=dense.run.kind)
                line = f"  {phase} batch {batch}:"
                for name, (_, t) in times.items():
                    for method, us in t.items():
                        d_us = times["dense"][1].get(method)
                        rows.append(dict(base_row, system=name, method=method,
                                         median_us=round(us, 2),
                                         ratio_vs_dense=round(d_us / us, 4) if d_us else "",
                                         logits_rel_err="" if name == "dense" else f"{err:.2e}"))
                        if name == "sparse" and d_us:
                            line += f" {method} {d_us:.0f}->{us:.0f}us ({d_us / us:.2f}x)"
                log(line + f" err {err:.1e}")
                write_csv(out, rows)
                case_s = max(case_s, time.time() - t_case)
            del dense_model, sparse_model, dense, sparse
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            block_s = time.time() - t_block if first_block else max(block_s,
                                                                    time.time() - t_block)
            first_block = False
    write_csv(out, rows)
    return info


def write_csv(path: Path, rows: Sequence[dict]):
    from bench.report import write_rows
    write_rows(path, COLUMNS, rows)


def read_csv(path: Path) -> List[dict]:
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- report

def markdown(rows: Sequence[dict], csv_name: str, meta: Optional[dict] = None) -> str:
    """Per (dtype, sparsity, phase, batch): dense and sparse GPU time (graph, else events)
    per call and the speedup, and the eager (host wall clock) speedup."""
    from bench.llm_bench import device_line
    meta = meta or {}
    by = {}
    for r in rows:
        key = (r["dtype"], float(r["sparsity"]), r["phase"], int(r["batch"]))
        by.setdefault(key, {})[(r["system"], r["method"])] = float(r["median_us"])
    first = rows[0] if rows else {}
    lines = [BEGIN, "## Llama decoder end to end (`bench/decoder_bench.py`)", "",
             f"transformers `LlamaForCausalLM`, {first.get('model', '?')} width, "
             f"{first.get('layers', '?')} decoder layers (random weights, decoder Linears "
             f"magnitude-pruned, lm_head "
             f"{'pruned' if (meta.get('args') or {}).get('prune_lm_head') else 'dense'}), "
             f"dense pruned model vs `sparsify()` of it; {first.get('cache', '?')} KV cache. "
             f"decode: one step (one token per sequence) after a {meta.get('prompt', '?')}-"
             "token prompt, i.e. the per-token latency; prefill: "
             f"{meta.get('prefill', '?')} tokens at batch 1. Speedup = dense / sparse; GPU time "
             f"from CUDA-graph replays (events where marked). From `{csv_name}`. "
             + device_line(meta), "",
             "| dtype | sparsity | phase | batch | dense us | sparse us | speedup | eager speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(by, key=lambda k: (k[0], k[1], k[2] != "decode", k[3])):
        t = by[key]
        m = next((m for m in ("graph", "events", "eager")
                  if ("dense", m) in t and ("sparse", m) in t), None)
        if m is None:
            continue
        d, s = t[("dense", m)], t[("sparse", m)]
        eager = (f"{t[('dense', 'eager')] / t[('sparse', 'eager')]:.2f}x"
                 if ("dense", "eager") in t and ("sparse", "eager") in t else "")
        mark = "" if m == "graph" else f" ({m})"
        lines.append(f"| {key[0]} | {key[1]:.0%} | {key[2]} | {key[3]} | {d:.1f} | {s:.1f} | "
                     f"{d / s:.2f}x{mark} | {eager} |")
    lines += ["", END]
    return "\n".join(lines)


def report(csv_path: Path, results_dir: Path = RESULTS):
    write_marked(Path(results_dir) / "RESULTS.md",
                 markdown(read_csv(csv_path), Path(csv_path).name, read_meta(csv_path)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--sparsity", default="0.5,0.7,0.9")
    p.add_argument("--batch", default="1,8", help="decode batch sizes")
    p.add_argument("--dtype", default="float16", help="comma list of " + ", ".join(TOLERANCE))
    p.add_argument("--prompt", type=int, default=128, help="tokens in the cache before decode")
    p.add_argument("--prefill", type=int, default=512, help="prefill tokens (batch 1)")
    p.add_argument("--phases", default="decode,prefill")
    p.add_argument("--cache", default="auto", choices=("auto", "static", "dynamic"))
    p.add_argument("--prune-lm-head", action="store_true")
    p.add_argument("--deadline-s", type=float, help="skip (and list) what would not finish")
    p.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, tiny model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="CSV (default bench/results/decoder_h100.csv; --smoke: a "
                                 "temporary folder's)")
    p.add_argument("--report", action="store_true", help="only rewrite RESULTS.md's section")
    a = p.parse_args(argv)
    if a.report:
        csv_path = Path(a.out) if a.out else RESULTS / "decoder_h100.csv"
        if not csv_path.exists():
            raise SystemExit(f"--out: no CSV at {csv_path} to report (run the benchmark first)")
        report(csv_path)
        return 0
    dtypes = a.dtype.split(",")
    if a.smoke:
        if "bfloat16" in dtypes:
            raise SystemExit("--dtype: the Triton interpreter's bfloat16 tl.dot is wrong; "
                             "--smoke takes float16 or float32")
        os.environ["TRITON_INTERPRET"] = "1"     # before the first import of triton
        model, device, prompt, prefill = "tiny", "cpu", min(a.prompt, 8), min(a.prefill, 16)
        out = Path(a.out) if a.out else \
            Path(tempfile.mkdtemp(prefix="decoder-smoke-")) / "decoder_smoke.csv"
    else:
        from bench.timing import require_cuda
        require_cuda()
        model, device, prompt, prefill = "llama2-7b", "cuda", a.prompt, a.prefill
        out = Path(a.out) if a.out else RESULTS / "decoder_h100.csv"
    from bench.dlmc_bench import write_meta
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = out.with_suffix(".meta.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # written first too: a run stopped by a time limit keeps its device and arguments
    write_meta(meta, vars(a), started=started, model=model, prompt=prompt, prefill=prefill,
               finished=False)
    info = run(model, a.layers, dtypes, [float(x) for x in a.sparsity.split(",")],
               [int(x) for x in a.batch.split(",")], prompt, prefill, out, device=device,
               cache=a.cache, prune_lm_head=a.prune_lm_head, deadline=Deadline(a.deadline_s),
               log=lambda s: print(s, flush=True), seed=a.seed, phases=a.phases.split(","))
    rows = info.pop("rows")
    write_meta(meta, vars(a), started=started, model=model, prompt=prompt, prefill=prefill,
               finished=True, **info)
    print(f"{len(rows)} rows -> {out}")
    for what, items in (("graph capture failed", info["graph_failures"]),
                        ("skipped (deadline)", info["skipped"]), ("MISMATCH", info["mismatches"])):
        for item in items:
            print(f"{what}: {item}")
    return 1 if info["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
