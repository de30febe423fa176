#!/usr/bin/env bash
# One device call (~3 minutes): what bounds the one-row table convolution kernel at batch 8?
# ncu --set full on the 256-channel layer (14 x 14, batch 8, 90%): the batch-innermost probe
# kernel (128-bit X loads; 128 and 64 columns) and the library's padded table kernel
# (128 columns, chunks of 8). Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
timeout ${NCU_S:-400} ncu --set full -k regex:"batch_inner_table|sparse_table" -c 3 \
    python - > $OUT/ncu_table_full.txt 2>&1 <<'PY'
import torch
from bench.batch_inner_probe import BatchInnerConv
from bench.conv_bench import layer_kernel, layers
from dsl import Schedule
from sparsert_triton.conv import conv_weight
from pathlib import Path
for name, p, C_in, C_out, H, stride in layers(Path(".carry/dlmc"), "0.9"):
    if not name.endswith("group3_1_1"):
        continue
    w = p.with_values(seed=0, dtype="float32")
    W4 = conv_weight(w, (C_in, 3, 3), order="hwc")[0].to_dense(torch.float32)
    W4 = W4.reshape(C_out, C_in, 3, 3).cuda()
    X = torch.randn(8, C_in, H, H, device="cuda")
    for block in (128, 64):
        BatchInnerConv(W4, stride, H, 8, block, 1)(X)
    s = Schedule(mode="table", rows_per_program=1, num_warps=1, chunk=8, prefetch_tail=True,
                 pad_input=True, block_n=128)
    layer_kernel(w, C_in, stride, s)(X)
    torch.cuda.synchronize()
PY
grep -E "batch_inner|sparse_table|Duration|Throughput|Hit Rate|Achieved Occupancy|Issued Ipc|Stall|Warp Cycles Per Issued|One or More|Busy|Bandwidth|Block Limit|Registers Per" \
    $OUT/ncu_table_full.txt | head -150
