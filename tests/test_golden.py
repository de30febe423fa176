"""Golden generated source for tiny fixed masks (review these diffs by eye).

Set SPARSERT_UPDATE_GOLDEN=1 to rewrite the files after an intended change.
"""
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dsl import Schedule, conv2d, gelu, relu
from sparsert_triton import sparse_kernel
from sparsert_triton.compiler.lower import lower
from sparsert_triton.compiler.plan import Signature
from sparsert_triton.compiler.render import render
from sparsert_triton.compiler.specialise import specialise

GOLDEN = Path(__file__).parent / "golden"

W_A = torch.tensor([[0.5, 0.0, -1.25, 0.0],
                    [0.0, 0.0, 0.0, 0.0],
                    [2.0, 0.0, 0.75, 3.0]])
W_B = torch.tensor([[0.0, 1.0, 0.0],
                    [-0.5, 0.0, 0.25]])


def _bias_relu(W, X, bias):
    return relu(W @ X + bias)


def _gelu_residual(W, X, residual):
    return gelu(W @ X) + residual


def _conv_relu(W, X):
    return relu(conv2d(W, X, stride=2, padding=1))


#: 2 output channels, 2 input channels, 2x2 kernel taps: one segment per tap in table mode
W_C = torch.tensor([[[[0.5, 0.0], [0.0, -1.0]], [[0.0, 0.0], [2.0, 0.0]]],
                    [[[0.0, 0.25], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])


CASES = {
    "values_bias_relu": (W_A, _bias_relu, Schedule(mode="values", rows_per_program=2, block_n=32,
                                                   max_statements_per_function=4),
                         (("bias", "row"),)),
    "indices_gelu_residual": (W_B, _gelu_residual, Schedule(mode="indices", rows_per_program=2,
                                                            block_n=16), (("residual", "full"),)),
    "table_bias_relu": (W_A, _bias_relu, Schedule(mode="table", rows_per_program=2, block_n=64,
                                                  chunk=4), (("bias", "row"),)),
    "table_conv_relu": (W_C, _conv_relu, Schedule(mode="table", block_n=32, chunk=2,
                                                  conv_input="segments"), ()),
    "table_conv_padded": (W_C, _conv_relu, Schedule(mode="table", block_n=32, chunk=2,
                                                     conv_input="padded", prefetch_tail=True,
                                                     prefetch_x=False), ()),
    "table_conv_split": (W_C, _conv_relu, Schedule(mode="table", block_n=32, chunk=2,
                                                   split_k=2), ()),
    # the one-row table kernel without the padded copy: offset << taps | tap bit per entry,
    # in-image bits per lane (tap_masks)
    "table_conv_tap_masks": (W_C, _conv_relu, Schedule(mode="table", block_n=32, chunk=2,
                                                       conv_input="masked", prefetch_x=False), ()),
    # X rows one chunk ahead, two chunks per loop step on two register sets (prefetch_x)
    "table_conv_prefetch_x": (W_C, _conv_relu, Schedule(mode="table", block_n=32, chunk=2,
                                                        conv_input="masked", prefetch_tail=True,
                                                        prefetch_x=True), ()),
    # row blocks of padded nonzero lists, 16-bit columns, K slices fixed up in order (blocks)
    "blocks_split_bias_relu": (W_A, _bias_relu, Schedule(mode="blocks", rows_per_program=2,
                                                         chunk=2, block_n=16, split_k=2),
                               (("bias", "row"),)),
    # a bit per position and each tile's packed values, decoded in registers: multiply-adds
    # with K ranges fixed up in order, and tl.dot of the decoded tile (bitmap)
    "bitmap_split_bias_relu": (W_A, _bias_relu, Schedule(mode="bitmap", rows_per_program=2,
                                                         chunk=32, block_n=4, split_k=2),
                               (("bias", "row"),)),
    "bitmap_dot_bias_relu": (W_A, _bias_relu, Schedule(mode="bitmap", rows_per_program=16,
                                                       chunk=32, block_n=16, use_dot=True),
                             (("bias", "row"),)),
    # the bitmap layout written out as dense tiles, then tl.dot over them (expand)
    "expand_bias_relu": (W_A, _bias_relu, Schedule(mode="expand", rows_per_program=16,
                                                   chunk=32, block_n=16, allow_tf32=True),
                         (("bias", "row"),)),
    # the one-row table kernel on a row-major X: transposed in the same launch, by ticket
    # (transpose_x)
    "table_transposed_bias_relu": (W_A, _bias_relu, Schedule(mode="table", rows_per_program=2,
                                                             block_n=64, chunk=4),
                                   (("bias", "row"),)),
    # unrolled convolution on the unpadded X: masked loads
    "values_conv_masked": (W_C, _conv_relu, Schedule(mode="values", rows_per_program=2,
                                                     block_n=16), ()),
}


def _source(name):
    W, fn, schedule, kinds = CASES[name]
    k = sparse_kernel(fn, schedule=schedule).specialize(W)
    plan = k.plan(64, "float32")
    if "transposed" in name:
        plan = replace(plan, transpose_x=True)
    sig = Signature("float32", "float32", "float32", kinds)
    # X contiguous: N = 64 columns, or a 2-channel 5x6 image
    strides = ((60, 30, 6, 1) if k.conv else (64, 1)) if plan.bake_strides else None
    taps = k.conv.kh * k.conv.kw if k.conv else 1
    offsets = (k.conv.padded_offsets(5, 6) if plan.pad_input else       # a 5x6 input
               k.conv.masked_offsets(5, 6) if plan.tap_masks else None)
    return render(lower(specialise(k.weight, plan, taps, offsets), plan, sig, k.program, k.conv,
                        x_strides=strides, shape=(k.weight.M, k.weight.K)), header="golden")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_source(name):
    path = GOLDEN / f"{name}.py"
    src = _source(name)
    if os.environ.get("SPARSERT_UPDATE_GOLDEN"):
        path.write_text(src)
    assert path.exists(), f"missing {path}; run with SPARSERT_UPDATE_GOLDEN=1"
    assert src == path.read_text()
    compile(src, str(path), "exec")      # valid Python
