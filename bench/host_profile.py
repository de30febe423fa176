"""The host path of SparseLinear on the CPU, with every kernel launch stubbed out: what this
project's Python costs per call, alone and inside a small BERT (the eager benchmark's
``--host-profile`` and ``--model-host-profile``; ``python -m bench.eager_bench --help``).

* :func:`stubbed_launches`: launches through the direct launcher become no-ops, the rest of
  the call runs as on a GPU (planned calls, shared transposing copies); the tests'
  ``recorded_launches`` records them instead (both through :func:`launches_replaced`);
* :func:`host_profile`: one ``SparseLinear(768 -> 3072)`` call per output layout, grad mode,
  input layout and N, and how many calls ran planned; :func:`cold_cache_line` the same call
  after a cache-evicting copy;
* :func:`model_host_profile`: every SparseLinear inside a small ``BertModel`` against the layer
  alone, the copies made and shared, the ``aten`` ops the sparse forward adds, and which of
  them launch work on a GPU (:func:`kernel_op`).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import os
import time
from typing import List, Optional

import torch
from torch import nn

from bench.eager_bench import DTYPES, SPARSITY, host_us, pruned_linear
from bench.models import magnitude_prune_

class _NoKernel:
    """Stands in for a compiled Triton kernel: its launch does nothing."""
    function = packed_metadata = None

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        return None


@contextlib.contextmanager
def launches_replaced(kernel_for):
    """Every kernel launch through :class:`sparsert_triton.runtime.direct.Launcher` launches
    ``kernel_for(key)`` instead, a stand-in for the compiled kernel kept per specialisation
    key ``(fn, device, spec_key)`` as Triton keeps its compiled kernels (the launcher
    switched on, as on a GPU, on stream 0; planned calls then launch the stand-ins
    directly). On exit every launcher it touched is as it was (switch, stream, kept
    kernels): a module's own launcher, such as the padded copy's, outlives the block, and
    left on with stand-ins its later launches would compute nothing."""
    from sparsert_triton.runtime import direct
    original = direct.Launcher.__call__
    touched = {}

    def call(self, fn, grid, args, opts, device, spec=None):
        touched.setdefault(id(self), (self, self.enabled, self.stream_of, dict(self.kernels)))
        self.enabled, self.stream_of = True, (lambda device: 0)
        key = (fn, device, direct.spec_key(args) if spec is None else spec)
        self.kernels.setdefault(key, kernel_for(key))
        return original(self, fn, grid, args, opts, device, spec)

    direct.Launcher.__call__ = call
    try:
        yield
    finally:
        direct.Launcher.__call__ = original
        for launcher, enabled, stream_of, kernels in touched.values():
            launcher.enabled, launcher.stream_of = enabled, stream_of
            launcher.kernels.clear()
            launcher.kernels.update(kernels)


@contextlib.contextmanager
def stubbed_launches():
    """Every kernel launch through :class:`sparsert_triton.runtime.direct.Launcher` becomes a no-op
    (:func:`launches_replaced` with kernels whose ``run`` does nothing): what remains is the
    Python host path. CPU (interpreter) only: on exit the launchers it touched are switched
    back off, as the interpreter has them, so later calls run the kernels again."""
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError("stubbed_launches is for the CPU under TRITON_INTERPRET=1")
    with launches_replaced(lambda key: _NoKernel()):
        yield


def cold_cache_line(calls: int) -> str:
    """The host time of one planned ``SparseLinear(3072 -> 768)`` call (an (in, N) input: no
    copy), back to back and with a 16 MB memcpy between calls that evicts the CPU caches, as
    a model's other layers do: the gap is what the same Python path costs inside a model.
    (Call under :func:`stubbed_launches`.)"""
    from sparsert_triton.nn import SparseLinear
    layer = SparseLinear.from_linear(pruned_linear(3072, 768, torch.float32, "cpu"))
    x = torch.randn(3072, 128).t()          # (N, in) with unit stride along N
    big = torch.randn(2**22)
    dst = torch.empty_like(big)
    hot = cold = 0
    with torch.no_grad():
        layer(x)
        for _ in range(calls):
            t0 = time.thread_time_ns()
            layer(x)
            hot += time.thread_time_ns() - t0
            dst.copy_(big)
            t0 = time.thread_time_ns()
            layer(x)
            cold += time.thread_time_ns() - t0
    return (f"float32 N=128   no_grad (in, N) input: {hot / 1e3 / calls:7.1f} us back to back, "
            f"{cold / 1e3 / calls:7.1f} us after a cache-evicting 16 MB copy")


def host_profile(calls: int, cprofile: bool = False) -> List[str]:
    """Per-call host microseconds of ``SparseLinear(768 -> 3072)`` at 90% on the CPU, the
    launch stubbed, for each output layout, for a row-major input (the transposing copy
    included: on the CPU a real copy, unlike on a GPU where it is one kernel launch) and for
    an input already laid out as (in, N) columns (the output of another sparse layer: no
    copy); with how many of the calls ran planned (all but the first of each input layout,
    else the fast path was missed). ``cprofile``: both layouts at float16, N = 1."""
    from sparsert_triton.nn import SparseLinear
    lines = []
    torch.set_num_threads(1)       # the copies on one thread, all of it timed
    with stubbed_launches():
        for dname in ("float32", "float16"):
            lin = pruned_linear(768, 3072, DTYPES[dname], "cpu")
            for layout in SparseLinear.OUTPUT_LAYOUTS:
                layer = SparseLinear.from_linear(lin, output_layout=layout)
                pattern = layer._pattern
                for grad in (False, True):
                    for N in (1, 128, 1024):
                        row_major = torch.randn(N, 768, dtype=DTYPES[dname])
                        columns = torch.randn(768, N, dtype=DTYPES[dname]).t()
                        before = pattern.planned_calls + pattern.checked_calls
                        planned = pattern.planned_calls
                        with torch.set_grad_enabled(grad):
                            # a new tensor per call (a view): the transposing copy is made
                            a = host_us(lambda: layer(row_major.view(row_major.shape)), calls)
                            b = host_us(lambda: layer(columns), calls)
                        total = pattern.planned_calls + pattern.checked_calls - before
                        lines.append(
                            f"{dname} {layout:7s} N={N:<5d} {'grad   ' if grad else 'no_grad'} "
                            f"row-major input {a:7.1f} us   (in, N) input {b:7.1f} us   "
                            f"planned {pattern.planned_calls - planned}/{total}")
                        print(lines[-1])
        lines.append(cold_cache_line(calls))
        print(lines[-1])
        if cprofile:
            import cProfile
            import pstats
            lin = pruned_linear(768, 3072, torch.float16, "cpu")
            for layout in SparseLinear.OUTPUT_LAYOUTS:
                layer = SparseLinear.from_linear(lin, output_layout=layout)
                x = torch.randn(1, 768, dtype=torch.float16)
                with torch.no_grad():
                    layer(x)
                    prof = cProfile.Profile()
                    prof.enable()
                    for _ in range(calls):
                        layer(x.view(x.shape))
                    prof.disable()
                print(f"float16 N=1 output_layout={layout!r}, {calls} calls:")
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return lines


def tiny_bert(layers: int, seq: int, hidden: int = 768, heads: int = 12,
              intermediate: int = 3072, dtype=torch.float32):
    """(dense, sparse) transformers BertModel on the CPU: bert-base's layer shapes, ``layers``
    layers, a 64-token vocabulary, every Linear pruned to 90%, eval mode; ``sparse`` is
    ``sparsify`` of a copy."""
    from transformers import BertConfig, BertModel
    from sparsert_triton import sparsify
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=max(seq, 8))
    dense = BertModel(config, add_pooling_layer=False)
    magnitude_prune_(dense, SPARSITY, kinds=(nn.Linear,))
    dense = dense.to(dtype=dtype).eval()
    sparse, _ = sparsify(copy.deepcopy(dense), min_sparsity=0.5)
    return dense, sparse


#: aten ops that only make or describe tensors (no kernel on a GPU): views, allocations,
#: and the wrappers that copy only through a child op (contiguous, to)
METADATA_OPS = frozenset("aten::" + n for n in (
    "empty", "empty_like", "empty_strided", "view", "_unsafe_view", "reshape",
    "_reshape_alias", "t", "transpose", "as_strided", "expand", "permute", "unsqueeze",
    "squeeze", "select", "slice", "alias", "detach", "resolve_conj", "resolve_neg",
    "contiguous", "to", "_to_copy", "lift_fresh", "split", "chunk", "unbind", "narrow",
    "scalar_tensor", "clone", "dropout"))
#: ops that run a product themselves whatever they call below them (on the CPU addmm copies
#: the bias into its output through a copy_ first)
PRODUCT_OPS = frozenset(("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm",
                         "aten::addmv", "aten::mv"))


def aten_ops(fn) -> "collections.Counter":
    """How many times each ``aten::`` op runs in one call of ``fn`` (torch.profiler, CPU)."""
    return profile_ops(fn)[0]


def profile_ops(fn) -> tuple:
    """(all ``aten::`` ops, :func:`kernel_ops`) of one call of ``fn``, each a Counter."""
    import collections
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return (collections.Counter(e.name for e in events),
            collections.Counter(e.name for e in events if kernel_op(e)))


def kernel_op(event) -> bool:
    """Whether a profiled ``aten::`` op launches work of its own on a GPU: a product
    (:data:`PRODUCT_OPS`), or an op outside :data:`METADATA_OPS` that calls no such op below
    it (a copy_ counts once, not again as the clone or contiguous around it). An
    approximation from the CPU's op tree (on the CPU ``addmm`` with a bias also counts its
    bias copy)."""
    if event.name in PRODUCT_OPS:
        return True
    if event.name in METADATA_OPS:
        return False
    return not any(c.name.startswith("aten::") and c.name not in METADATA_OPS
                   for c in event.cpu_children)


#: the unfused attention that scaled_dot_product_attention falls back to
ATTENTION_MATH = "aten::_scaled_dot_product_attention_math"


def model_host_profile(forwards: int, layers: int = 2, seq: int = 128, batch: int = 1,
                       dtype=torch.float32, sizes: Optional[dict] = None,
                       output_layout: Optional[str] = None, cprofile: bool = False) -> dict:
    """Host time of each ``SparseLinear`` call inside a small BERT (bert-base's layer shapes,
    ``layers`` layers, ``batch`` x ``seq`` tokens) on the CPU with the launches stubbed
    (:func:`stubbed_launches`), against the same layer called alone on an input of the same
    layout (a new tensor per call); whether every in-model call ran planned; how many
    transposing copies one forward makes and shares; and the ``aten::`` ops one sparse
    forward runs beyond the dense model's (copies, the attention's fallback path: each one a
    kernel launch on a GPU). The per-call times include the CPU's own copies (on a GPU one
    launch each). ``output_layout``: every sparse layer's
    :attr:`~sparsert_triton.nn.SparseLinear.output_layout` (None: as ``sparsify`` leaves
    it). Also counted: the kernel ops (:func:`kernel_op`) of each forward, those the sparse
    one runs beyond the dense one (``extra_kernel_ops``; a sparse layer's own kernel is a
    Triton launch, not an aten op, and the dense ``addmm`` it replaces leaves) and whether
    the attention fell back to its math path (``attention_math``: calls per forward).
    Prints a report; returns its figures."""
    from sparsert_triton import nn as snn
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # the CPU's copies on one thread, all of it timed
    try:
        return _model_host_profile(snn, forwards, layers, seq, batch, dtype, sizes,
                                   output_layout, cprofile)
    finally:
        torch.set_num_threads(threads)


def _model_host_profile(snn, forwards, layers, seq, batch, dtype, sizes, output_layout,
                        cprofile) -> dict:
    dense, sparse = tiny_bert(layers, seq, dtype=dtype, **(sizes or {}))
    names = {m: n for n, m in sparse.named_modules() if isinstance(m, snn.SparseLinear)}
    for m in names:
        if output_layout is not None:
            m.output_layout = output_layout
    output_layout = next(iter(names)).output_layout if names else output_layout
    ids = torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(0))
    spent = {m: 0 for m in names}
    inputs = {}

    def timed(m, forward):
        def call(x):
            t0 = time.thread_time_ns()
            y = forward(x)
            spent[m] += time.thread_time_ns() - t0
            inputs[m] = x
            return y
        return call

    report = {"layers": {}}
    with stubbed_launches(), torch.no_grad():
        for _ in range(2):
            sparse(input_ids=ids)                       # checks, plans, stub kernels
        start = {m: (m._pattern.planned_calls, m._pattern.checked_calls) for m in names}
        made, shared = snn._columns.copies, snn._columns.reuses
        copying = [0]
        transpose = snn._columns.of

        def timed_copy(x, Xt=None):
            t0 = time.thread_time_ns()
            out = transpose(x, Xt)
            copying[0] += time.thread_time_ns() - t0
            return out
        snn._columns.of = timed_copy
        for m in names:
            m.forward = timed(m, m.forward)
        try:
            for _ in range(forwards):
                sparse(input_ids=ids)
        finally:
            del snn._columns.of
            for m in names:
                del m.forward
        report["copy_us_per_forward"] = copying[0] / 1e3 / forwards
        report["copies_per_forward"] = (snn._columns.copies - made) / forwards
        report["shared_per_forward"] = (snn._columns.reuses - shared) / forwards
        for m, name in names.items():
            planned = m._pattern.planned_calls - start[m][0]
            checked = m._pattern.checked_calls - start[m][1]
            x = inputs[m]
            x = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).copy_(x)
            alone = host_us(lambda: m(x.view(x.shape)), max(50, 10 * forwards))
            layout = "rows" if x.stride(-1) == 1 else "columns"
            report["layers"][name] = dict(in_model_us=spent[m] / 1e3 / forwards, alone_us=alone,
                                          planned=planned, checked=checked, input=layout)
        snn._columns.clear()
        dense_ops, dense_kernels = profile_ops(lambda: dense(input_ids=ids))
        sparse_ops, sparse_kernels = profile_ops(lambda: sparse(input_ids=ids))
        if cprofile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(forwards):
                sparse(input_ids=ids)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    n = len(names)
    rows = report["layers"]
    print(f"BertModel {layers} layer(s), {batch}x{seq} tokens, {str(dtype)[6:]}, {n} sparse "
          f"layers, output_layout={output_layout!r}, launches stubbed (CPU host time per call)")
    for name, r in rows.items():
        print(f"  {name:44s} {r['input']:7s} input  in model {r['in_model_us']:7.1f} us  "
              f"alone {r['alone_us']:7.1f} us  planned {r['planned']}/{forwards} "
              f"(checked {r['checked']})")
    mean = lambda k: sum(r[k] for r in rows.values()) / n   # noqa: E731
    report["in_model_us"], report["alone_us"] = mean("in_model_us"), mean("alone_us")
    extra = {op: sparse_ops[op] - dense_ops[op] for op in set(dense_ops) | set(sparse_ops)
             if sparse_ops[op] != dense_ops[op]}
    report["aten_dense"], report["aten_sparse"] = sum(dense_ops.values()), sum(sparse_ops.values())
    report["extra_aten_ops"] = extra
    report["output_layout"] = output_layout
    report["kernel_ops_dense"] = sum(dense_kernels.values())
    report["kernel_ops_sparse"] = sum(sparse_kernels.values())
    report["extra_kernel_ops"] = {op: sparse_kernels[op] - dense_kernels[op]
                                  for op in set(dense_kernels) | set(sparse_kernels)
                                  if sparse_kernels[op] != dense_kernels[op]}
    report["attention_math"] = sparse_ops[ATTENTION_MATH]
    print(f"  mean per sparse layer: in model {report['in_model_us']:.1f} us, alone "
          f"{report['alone_us']:.1f} us")
    print(f"  transposing copies per forward: {report['copies_per_forward']:.0f} made, "
          f"{report['shared_per_forward']:.0f} shared, {report['copy_us_per_forward']:.0f} us "
          "(the CPU's copies; one launch each on a GPU); per sparse layer without them: "
          f"{report['in_model_us'] - report['copy_us_per_forward'] / n:.1f} us in model")
    print(f"  aten ops per forward: dense {report['aten_dense']}, sparse {report['aten_sparse']} "
          f"({(report['aten_sparse'] - report['aten_dense']) / n:+.1f} per sparse layer)")
    for op, d in sorted(extra.items(), key=lambda e: (-abs(e[1]), e[0])):
        print(f"    {op:44s} {d:+d}")
    kd, ks = report["kernel_ops_dense"], report["kernel_ops_sparse"]
    print(f"  kernel ops per forward (launches on a GPU; sparse kernels not counted): dense "
          f"{kd}, sparse {ks}; attention's math path {report['attention_math']}x")
    for op, d in sorted(report["extra_kernel_ops"].items(), key=lambda e: (-abs(e[1]), e[0])):
        print(f"    {op:44s} {d:+d}")
    return report
