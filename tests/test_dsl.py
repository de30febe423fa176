"""Tracing, rejection messages, schedules and plans."""
import pytest
import torch

import dsl
from dsl import Schedule, TraceError, clamp, gelu, ir, relu, silu, trace
from sparsert_triton.compiler.canonicalise import canonicalise_program, fold
from sparsert_triton.compiler.plan import Plan


def test_trace_builds_the_expression():
    def fc(W, X, bias, scale):
        return relu(W @ X + bias) * scale

    p = trace(fc)
    assert p.weight == "W" and p.activation == "X" and p.operands == ("bias", "scale")
    assert p.out == ir.Binary("mul", ir.Unary("relu", ir.Binary("add", ir.MatMul(),
                                                                  ir.Operand("bias"))),
                              ir.Operand("scale"))


def test_shared_product_is_one_matmul():
    def swish(W, X):
        y = W @ X
        return y * dsl.sigmoid(y)

    p = trace(swish)
    assert sum(isinstance(n, ir.MatMul) for n in ir.walk(p.out)) == 2   # same node, used twice


def test_constants_fold_and_cast():
    def f(W, X):
        return clamp(gelu(W @ X) * (2 * 3) + 1, -1, None).to("float16")

    p = canonicalise_program(trace(f))
    assert isinstance(p.out, ir.Cast) and p.out.dtype == "float16"
    consts = [n.value for n in ir.walk(p.out) if isinstance(n, ir.Const)]
    assert 6.0 in consts and 1.0 in consts
    assert fold(ir.Binary("add", ir.Const(1.0), ir.Const(2.0))) == ir.Const(3.0)


def _line_of(fn, text):
    import inspect
    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, l in enumerate(src) if text in l)


@pytest.mark.parametrize("body, needle, message", [
    ("two_products", "W @ X) + (W @ X", "only one product"),
    ("x_at_w", "X @ W", "sparse weight must be on the left"),
    ("unknown_call", "torch.exp", "not a DSL op"),
    ("control_flow", "if y", "control flow"),
    ("weight_arith", "W + 1", "only `W @ X` may enter"),
])
def test_rejections_name_the_line(body, needle, message):
    import torch

    def two_products(W, X):
        return (W @ X) + (W @ X)

    def x_at_w(W, X):
        return X @ W

    def unknown_call(W, X):
        return torch.exp(W @ X)

    def control_flow(W, X):
        y = W @ X
        if y:
            return y
        return y

    def weight_arith(W, X):
        return (W + 1) @ X

    fn = locals()[body]
    with pytest.raises(TraceError) as e:
        trace(fn)
    assert message in str(e.value)
    assert f":{_line_of(fn, needle)}:" in str(e.value), str(e.value)


def test_no_product_and_bad_signature():
    with pytest.raises(TraceError, match="must compute"):
        trace(lambda W, X, b: relu(b))
    with pytest.raises(TraceError, match="at least"):
        trace(lambda W: W)
    with pytest.raises(TraceError, match="positional"):
        trace(lambda W, X, *rest: W @ X)


def test_epilogue_functions_also_work_on_tensors():
    import torch
    t = torch.tensor([-1.0, 2.0])
    assert relu(t).tolist() == [0.0, 2.0]
    assert torch.allclose(silu(t), torch.nn.functional.silu(t))


def test_schedule_repr_round_trips():
    s = Schedule(mode="table", rows_per_program=16, block_n=64, chunk=16, use_dot=True,
                 row_order="cluster", num_warps=8)
    assert eval(repr(s), {"Schedule": Schedule}) == s
    assert repr(Schedule()) == "Schedule()"
    assert Schedule(block_n="64").block_n == 64      # lenient
    assert hash(s) == hash(eval(repr(s), {"Schedule": Schedule}))


@pytest.mark.parametrize("kw, msg", [
    (dict(mode="dense"), "mode"), (dict(row_order="random"), "row_order"),
    (dict(block_n=0), "block_n"), (dict(block_n="wide"), "block_n"),
    (dict(use_dot="yes"), "use_dot"),
    # non-integers and non-booleans, never truncated or taken as true
    (dict(block_n=64.9), "block_n must be an int"),
    (dict(rows_per_program=2.7), "rows_per_program must be an int"),
    (dict(rows_per_program=True), "rows_per_program must be an int"),
    (dict(chunk=None), "chunk must be an int"), (dict(split_k="auto"), "split_k must be an int"),
    (dict(allow_tf32="x"), "allow_tf32 must be True or False"),
    (dict(allow_tf32="auto"), "allow_tf32"), (dict(prefetch_x=1), "prefetch_x must be True"),
])
def test_schedule_rejects_bad_fields(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Schedule(**kw)


def test_schedule_takes_mode_names_dicts_and_integral_numbers():
    """A whole schedule may be a mode name or a dict of fields (in ``sparse_kernel`` and
    ``specialize``); integer fields take ints written as strings, integral floats and numpy
    integers; unknown fields and other types are errors naming them."""
    import numpy as np
    from dsl.schedule import as_schedule
    from sparsert_triton import sparse_kernel
    assert Schedule(block_n="64", chunk=16.0, rows_per_program=np.int64(4),
                    use_dot=np.bool_(False)) == Schedule(block_n=64, chunk=16,
                                                         rows_per_program=4, use_dot=False)
    assert as_schedule("values") == Schedule(mode="values")
    assert as_schedule({"mode": "table", "chunk": 4}) == Schedule(mode="table", chunk=4)
    with pytest.raises(ValueError, match="unknown field.*'modes'"):
        as_schedule({"modes": "table"})
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        as_schedule(3)

    def mm(W, X):
        return W @ X
    assert sparse_kernel(mm, schedule="values").schedule == Schedule(mode="values")
    k = sparse_kernel(mm).specialize(torch.eye(3), {"mode": "table", "chunk": 2})
    assert k.schedule == Schedule(mode="table", chunk=2)
    assert torch.equal(k(torch.ones(3, 2)), torch.ones(3, 2))


def _plan(**kw):
    base = dict(mode="values", rows_per_program=8, block_n=64, row_order="given", chunk=8,
                use_dot=False, allow_tf32=False, max_statements_per_function=256,
                max_functions_per_kernel=64, num_warps=4, num_stages=1)
    base.update(kw)
    return Plan(**base)


@pytest.mark.parametrize("kw, msg", [
    (dict(block_n=48), "block_n"), (dict(mode="table", rows_per_program=3), "power of two"),
    (dict(mode="table", use_dot=True, rows_per_program=8, chunk=16), "use_dot"),
    (dict(use_dot=True), "table mode only"), (dict(num_warps=3), "num_warps"),
    (dict(max_statements_per_function=4), "max_statements"),
])
def test_plan_validates(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _plan(**kw)


def test_plan_is_frozen_and_hashable():
    p = _plan()
    assert hash(p) == hash(_plan())
    with pytest.raises(Exception):
        p.block_n = 32
    assert eval(repr(p.to_schedule()), {"Schedule": Schedule}) == p.to_schedule()


def test_table_kernel_options_are_validated():
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight(torch.eye(8))
    for bad, msg in [(dict(mode="table", rows_per_program=6), "power of two"),
                     (dict(mode="indices", prefetch_tail=True), "prefetch_tail applies to"),
                     (dict(mode="values", split_k=2), "split_k applies to"),
                     (dict(mode="blocks", split_k=17), "split_k"),
                     (dict(mode="table", split_k=3), "split_k"),
                     (dict(mode="table", split_k=2, prefetch_tail=True), "split_k"),
                     (dict(mode="table", rows_per_program=16, chunk=16, use_dot=True,
                           prefetch_tail=True), "prefetch_tail")]:
        with pytest.raises(ValueError, match=msg):
            plan_for(Schedule(**bad), w, 16, "float32")
    for bad, msg in [(dict(mode="indices", prefetch=True), "prefetch"),
                     (dict(mode="values", tap_segments=True), "tap_segments"),
                     (dict(mode="table", use_dot=True, rows_per_program=16, chunk=16,
                           block_n=16, prefetch=True), "prefetch")]:     # a Plan built as such
        with pytest.raises(ValueError, match=msg):
            _plan(**bad)
    # the plan prefetches every one-row table kernel (1.1-1.5x, explore run 5)
    assert plan_for(Schedule(mode="table"), w, 16, "float32").prefetch
    assert not plan_for(Schedule(mode="table", rows_per_program=16, chunk=16, use_dot=True),
                        w, 16, "float32").prefetch


def test_convolution_defaults():
    """Convolutions' table kernel defaults to tap masks where they serve the input (else the
    padded input) with 64-column tiles, chunks of 8 and the prefetched tail (measured on the
    H100); conv_input="segments" gives the tap kernel with its own defaults (chunks of 4); explicit
    choices and W @ X keep their own."""
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight((torch.rand(64, 576) < 0.1).float())
    conv = plan_for(Schedule(mode="table"), w, 3136, "float32", conv=True)
    assert (conv.block_n, conv.chunk, conv.pad_input, conv.prefetch_tail, conv.tap_segments) \
        == (64, 8, True, True, False)
    masks = plan_for(Schedule(mode="table"), w, 3136, "float32", conv=True, tap_masks_fit=True)
    assert (masks.block_n, masks.chunk, masks.pad_input, masks.prefetch_tail, masks.tap_masks,
            masks.tap_segments) == (64, 8, False, True, True, False)
    taps = plan_for(Schedule(mode="table", conv_input="segments"), w, 3136,
                    "float32", conv=True, tap_masks_fit=True)
    assert (taps.chunk, taps.pad_input, taps.prefetch_tail, taps.tap_segments) \
        == (4, False, False, True)
    split = plan_for(Schedule(mode="table", split_k=4), w, 3136, "float32", conv=True)
    assert (split.num_warps, split.pad_input, split.prefetch_tail) == (4, True, False)
    assert not plan_for(Schedule(mode="table"), w, 3136, "float32").pad_input
    mm = plan_for(Schedule(mode="table"), w, 8 * 3136, "float32")   # > 2048 programs
    assert (mm.block_n, mm.chunk) == (128, 8)
    own = plan_for(Schedule(mode="table", block_n=128, chunk=8), w, 3136, "float32", conv=True)
    assert (own.block_n, own.chunk) == (128, 8)
    assert plan_for(Schedule(mode="table"), w, 20, "float32", conv=True).block_n == 32


def test_removed_schedule_fields_are_refused_by_name():
    """``parallel_rows``, ``column_programs``, ``tap_pointers`` and ``pack_nonzeros`` are no
    longer fields
    (bench/NOTES.md, "Schedule fields removed"): a saved dict may hold them at their old
    'off' value, any other value is an error naming the field."""
    from dsl.schedule import as_schedule
    assert as_schedule({"mode": "table", "parallel_rows": 1, "column_programs": 0}) == \
        Schedule(mode="table")
    for off in ("auto", False):
        assert as_schedule({"mode": "values", "tap_pointers": off,
                            "pack_nonzeros": off}) == Schedule(mode="values")
    for name, v in (("parallel_rows", 4), ("column_programs", 2), ("tap_pointers", True),
                    ("tap_pointers", 0), ("pack_nonzeros", True)):
        with pytest.raises(ValueError, match=name):
            as_schedule({"mode": "table", name: v})
        with pytest.raises(TypeError, match=name):
            Schedule(**{name: v})


def test_a_plans_schedule_for_its_kind_names_only_the_fields_that_apply():
    """``Plan.to_schedule(conv=False)`` leaves the convolution-only fields 'auto': its repr
    names none of them, and the plan it resolves to is the same; a convolution's keeps them."""
    from dsl.schedule import CONV_FIELDS
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.compiler.plan import DERIVED
    from sparsert_triton.weights import as_sparse_weight
    g = torch.Generator().manual_seed(0)
    w = as_sparse_weight(torch.randn(32, 64, generator=g) * (torch.rand(32, 64, generator=g) < 0.3))
    for s in (Schedule(mode="table"), Schedule(mode="values"), Schedule(mode="table", split_k=2)):
        plan = plan_for(s, w, 64, "float32")
        shown = plan.to_schedule(conv=False)
        assert not any(f"{f}=" in repr(shown) for f in CONV_FIELDS), repr(shown)
        assert plan_for(shown, w, 64, "float32") == plan
        assert plan.to_schedule() == Schedule(**{f: getattr(plan, f) for f in
                                                  Schedule.__dataclass_fields__})
        assert plan_for(plan.to_schedule(), w, 64, "float32") == plan
        assert not any(f"{f}=" in repr(plan.to_schedule()) for f in DERIVED)
    assert plan_for(Schedule(mode="table"), w, 64, "float32").tap_segments   # derived, unshown
    conv = plan_for(Schedule(mode="table"), w, 64, "float32", conv=True, tap_masks_fit=True)
    assert all(f"{f}=" in repr(conv.to_schedule(conv=True)) for f in CONV_FIELDS)


def test_functions_per_kernel_follow_the_statements_bound():
    """``max_functions_per_kernel`` is set by the plan (no Schedule field): 16 functions per
    kernel up to the default 2048 statements each, 8 above (the bounds of every measured
    unrolled schedule); a saved schedule holding it loads, the plan decides."""
    from dsl.schedule import as_schedule
    from sparsert_triton.compiler.canonicalise import plan_for
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight(torch.eye(8))
    for statements, functions in ((1024, 16), (2048, 16), (2049, 8), (16384, 8)):
        s = Schedule(mode="values", max_statements_per_function=statements)
        assert plan_for(s, w, 16, "float32").max_functions_per_kernel == functions
    saved = {"mode": "values", "max_statements_per_function": 16384,
             "max_functions_per_kernel": 64}
    assert as_schedule(saved) == Schedule(mode="values", max_statements_per_function=16384)
    with pytest.raises(TypeError, match="max_functions_per_kernel"):
        Schedule(max_functions_per_kernel=8)


def test_saved_pad_input_and_tap_masks_read_as_conv_input():
    """The convolution input's two earlier switches in a saved dict: each pair that resolved
    to one form (plan_for before conv_input) is that form; a pair that named none (both on, or
    pad_input 'auto' with tap_masks off), or either beside conv_input, is refused naming the
    fields; the new field keeps its own values."""
    import numpy as np
    from dsl.schedule import LEGACY_CONV_INPUT, as_schedule
    for (pad, masks), form in LEGACY_CONV_INPUT.items():
        assert as_schedule({"mode": "table", "pad_input": pad, "tap_masks": masks}) == \
            Schedule(mode="table", conv_input=form)
    assert as_schedule({"pad_input": True}) == Schedule(conv_input="padded")
    assert as_schedule({"tap_masks": np.bool_(True)}) == Schedule(conv_input="masked")
    assert as_schedule({"pad_input": False}) == Schedule(conv_input="segments")
    for pad, masks in ((True, True), ("auto", False), (1, False), (True, "x")):
        with pytest.raises(ValueError, match=f"pad_input={pad!r} with tap_masks={masks!r}"):
            as_schedule({"pad_input": pad, "tap_masks": masks})
    with pytest.raises(ValueError, match="conv_input='padded' together with pad_input"):
        as_schedule({"conv_input": "padded", "pad_input": True})
    for old in ("pad_input", "tap_masks"):
        with pytest.raises(TypeError, match=old):
            Schedule(**{old: True})
    assert len(Schedule.__dataclass_fields__) == 14
