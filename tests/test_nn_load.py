"""``load_state_dict`` of the sparse layers: the loaded matrix is the state_dict's, and a load
that fails leaves the layer exactly as it was (nothing copied, the same pattern)."""
import numpy as np
import pytest
import torch

from sparsert_triton.nn import SparseConv2d, SparseLinear

pytestmark = pytest.mark.usefixtures("on_test_device")


def _snapshot(layer):
    return ({k: v.clone() if torch.is_tensor(v) else v for k, v in layer.state_dict().items()},
            layer.kernel_id, layer.values)


def _assert_unchanged(layer, snap, x):
    state, kernel_id, values = snap
    now = layer.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v) if torch.is_tensor(v) else now[k] == v, k
    assert layer.kernel_id == kernel_id and layer.values is values
    ref = x @ layer.dense_weight().t() + (layer.bias if layer.bias is not None else 0)
    torch.testing.assert_close(layer(x), ref)       # forward uses the mask state_dict shows


def _one_row(indices, values=(1.0, 2.0, 3.0, 4.0), indptr=None):
    layer = SparseLinear(4, 1, bias=False)
    sd = layer.state_dict()
    sd.update(values=torch.tensor(values), indices=torch.tensor(indices),
              indptr=torch.tensor([0, len(indices)] if indptr is None else indptr))
    return layer, sd


def test_unsorted_indices_are_refused_and_the_layer_kept():
    # W = [4, 3, 2, 1] as (column 3: 1.0, column 2: 2.0, ...); x = [1, 2, 3, 4]
    layer, sd = _one_row([3, 2, 1, 0])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    snap = _snapshot(layer)
    with pytest.raises(RuntimeError, match=r"indices: .*sorted"):
        layer.load_state_dict(sd)
    _assert_unchanged(layer, snap, x)


def test_sorted_indices_load_the_state_dicts_matrix():
    layer, sd = _one_row([0, 1, 2, 3], values=(4.0, 3.0, 2.0, 1.0))
    layer.load_state_dict(sd)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert layer(x).item() == 20.0


@pytest.mark.parametrize("change,match", [
    (dict(indices=[0, 1, 2, 9]), r"indices: column index 9 out of range \[0, 4\)"),
    (dict(indices=[0, 1, 1, 2]), r"indices: .*sorted"),
    (dict(indices=[-1, 0, 1, 2]), r"indices: column index -1 out of range"),
    (dict(indptr=[0, 5]), r"indptr: .*end at 4"),
    (dict(indices=[[0, 1], [2, 3]]), r"indices: must be 1-D"),
    (dict(indptr=[1, 4]), r"indptr: .*start at 0"),
    (dict(values=(1.0, 2.0, 3.0)), r"values: shape \(3,\), expected \(4,\)"),
])
def test_a_bad_mask_or_values_changes_nothing(change, match):
    layer = SparseLinear(4, 1, bias=False, mask=torch.tensor([[True, False, True, False]]))
    sd = layer.state_dict()
    sd.update(values=torch.tensor(change.get("values", (1.0, 2.0, 3.0, 4.0))),
              indices=torch.tensor(change.get("indices", [0, 1, 2, 3])),
              indptr=torch.tensor(change.get("indptr", [0, 4])))
    snap = _snapshot(layer)
    with pytest.raises(RuntimeError, match=match) as e:
        layer.load_state_dict(sd)
    assert "scipy" not in str(e.value)
    _assert_unchanged(layer, snap, torch.randn(3, 4))


def test_float_indices_a_lone_indptr_and_a_bad_bias_are_refused():
    layer = SparseLinear(4, 2, mask=torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]]))
    good = {k: v.clone() for k, v in SparseLinear(4, 2).state_dict().items()
            if torch.is_tensor(v)}
    snap = _snapshot(layer)
    for bad, match in ((dict(good, indices=good["indices"].float()), r"indices: .*integer"),
                       ({"indptr": good["indptr"], "values": good["values"]},
                        r"indptr.*indices.*both"),
                       (dict(good, bias=torch.zeros(3)), r"bias: shape \(3,\), expected \(2,\)")):
        with pytest.raises(RuntimeError, match=match):
            layer.load_state_dict(bad, strict=False)
        _assert_unchanged(layer, snap, torch.randn(3, 4))


def test_strict_load_with_a_missing_key_keeps_the_pattern_and_buffers_in_step():
    # nn.Module loads the keys that are present and then reports the missing one; the layer's
    # kernel must compute the mask its state_dict now shows
    layer = SparseLinear(4, 2, mask=torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]]))
    other = SparseLinear(4, 2).state_dict()
    del other["bias"]
    with pytest.raises(RuntimeError, match="Missing key.*bias"):
        layer.load_state_dict(other)
    assert layer.nnz == 8 and torch.equal(layer.values, other["values"])
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), x @ layer.dense_weight().t() + layer.bias)


def test_a_new_mask_without_values_is_refused():
    layer = SparseLinear(4, 2, mask=torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]]))
    other = SparseLinear(4, 2).state_dict()
    del other["values"]
    snap = _snapshot(layer)
    with pytest.raises(RuntimeError, match="values"):
        layer.load_state_dict(other, strict=False)
    _assert_unchanged(layer, snap, torch.randn(3, 4))


def test_a_bad_schedule_changes_nothing():
    layer = SparseLinear(4, 2, mask=torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]]))
    other = SparseLinear(4, 2).state_dict()
    other["_extra_state"] = {"schedule": {"mode": "table", "no_such_field": 1}}
    snap = _snapshot(layer)
    with pytest.raises(RuntimeError, match="_extra_state"):
        layer.load_state_dict(other)
    _assert_unchanged(layer, snap, torch.randn(3, 4))


def test_conv_layer_refuses_unsorted_indices_too():
    layer = SparseConv2d(1, 1, (1, 3), bias=False)
    sd = layer.state_dict()
    sd["indices"] = torch.tensor([2, 1, 0])
    indices_before = layer.indices.clone()
    with pytest.raises(RuntimeError, match=r"indices: .*sorted"):
        layer.load_state_dict(sd)
    assert torch.equal(layer.indices, indices_before)


def test_a_pattern_refuses_unsorted_indices_and_leaves_the_callers_arrays():
    # the check once ran on an array scipy had sorted in place, so it always agreed
    from sparsert_triton.ops import SparsePattern
    indices = np.array([3, 2, 1, 0])
    with pytest.raises(ValueError, match="sorted"):
        SparsePattern(1, 4, np.array([0, 4]), indices)
    assert indices.tolist() == [3, 2, 1, 0]


def test_a_state_saved_with_removed_schedule_fields_at_their_old_defaults_loads():
    """Schedules saved before parallel_rows / column_programs were removed held them at 1 / 0:
    such a state loads; another value is refused naming the field."""
    import torch
    from sparsert_triton.nn import SparseLinear
    lin = torch.nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(4, 8) < 0.5)
    layer = SparseLinear.from_linear(lin)
    state = layer.state_dict()
    state["_extra_state"]["schedule"].update(parallel_rows=1, column_programs=0)
    fresh = SparseLinear.from_linear(lin)
    fresh.load_state_dict(state)
    x = torch.randn(3, 8)
    torch.testing.assert_close(fresh(x), layer(x))
    state["_extra_state"]["schedule"]["parallel_rows"] = 4
    import pytest
    with pytest.raises(RuntimeError, match="parallel_rows=4 is no longer a field"):
        SparseLinear.from_linear(lin).load_state_dict(state)


def test_a_state_saved_with_the_fields_the_plan_now_sets_loads():
    """Schedules saved before issue 19 (a tuned plan's schedule holds every field) may hold
    tap_pointers / pack_nonzeros off and the fields the plan now sets (pdl, bake_strides,
    prefetch, tap_segments, num_stages, max_functions_per_kernel) at any value: such a state
    loads and computes as before; asking for a removed path is refused naming the field."""
    from sparsert_triton.nn import SparseLinear
    lin = torch.nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(4, 8) < 0.5)
    layer = SparseLinear.from_linear(lin)
    state = layer.state_dict()
    state["_extra_state"]["schedule"].update(
        tap_pointers=False, pack_nonzeros=False, pdl=True, bake_strides=False, prefetch=True,
        tap_segments=True, num_stages=2, max_functions_per_kernel=16)
    fresh = SparseLinear.from_linear(lin)
    fresh.load_state_dict(state)
    x = torch.randn(3, 8)
    torch.testing.assert_close(fresh(x), layer(x))
    state["_extra_state"]["schedule"]["pack_nonzeros"] = True
    with pytest.raises(RuntimeError, match="pack_nonzeros=True is no longer a field"):
        SparseLinear.from_linear(lin).load_state_dict(state)


def test_a_state_saved_with_pad_input_and_tap_masks_loads_as_conv_input():
    """Schedules saved before the convolution input's two switches became one field
    (``conv_input``) hold ``pad_input`` / ``tap_masks``: each pair that named one form loads
    as that form and computes the same; a contradictory pair is refused naming both fields."""
    from dsl import Schedule
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(5, 3, 3, 3, generator=torch.Generator().manual_seed(2)) < 0.5)
    x = torch.randn(2, 3, 6, 5)
    layer = SparseConv2d.from_conv2d(conv, schedule=Schedule(mode="table", block_n=16))
    state = layer.state_dict()
    saved = state["_extra_state"]["schedule"]
    del saved["conv_input"]
    for pad, masks, form in ((True, False, "padded"), (False, True, "masked"),
                             (False, False, "segments"), ("auto", "auto", "auto")):
        saved.update(pad_input=pad, tap_masks=masks)
        fresh = SparseConv2d.from_conv2d(conv)
        fresh.load_state_dict(state)
        assert fresh.schedule == Schedule(mode="table", block_n=16, conv_input=form)
        torch.testing.assert_close(fresh(x), layer(x), rtol=1e-5, atol=1e-5)
    saved.update(pad_input=True, tap_masks=True)
    with pytest.raises(RuntimeError, match="pad_input=True with tap_masks=True names no one"):
        SparseConv2d.from_conv2d(conv).load_state_dict(state)
