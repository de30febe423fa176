#!/usr/bin/env bash
# One device call (~3 minutes): the GPU test of bench/smem_tile_probe.py, then ncu --set full
# of its kernel on the 256-channel layer (14 x 14, batch 8, 90%; P=2) and the 64-channel
# one (56 x 56; P=8), beside the library's tap-mask table kernel on the 256-channel layer.
# TABLE picks the probe's table mode (default smem). NCU_ARGS replaces '--set full' (e.g. raw metrics). Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels pytest hypothesis > /dev/null 2>&1
SPARSERT_TEST_DEVICE=cuda timeout 120 python -m pytest -q -p no:cacheprovider \
    tests/test_smem_tile_probe.py > $OUT/smem_tile_tests.txt 2>&1
tail -n 3 $OUT/smem_tile_tests.txt
NCU_ARGS=${NCU_ARGS:---set full}
timeout ${NCU_S:-300} ncu $NCU_ARGS -k regex:"smem_rows|sparse_table" -c 3 \
    python - > $OUT/ncu_smem.txt 2>&1 <<'PY'
import os
import torch
from bench.probe_harness import ProbeRun, probe_args
from bench.smem_tile_probe import SmemTileConv
from bench.conv_bench import layer_kernel
from dsl import Schedule
a = probe_args("ncu").parse_args(["--dlmc", ".carry/dlmc", "--only", "group3_1_1,group1_1_1"])
for case in ProbeRun(a).cases():
    SmemTileConv(case.W4, case.H, case.H, 8, P=2 if case.C_in == 256 else 8, NW=16, SPG=4, U=8,
                 table=os.environ.get("TABLE", "smem"))(case.X)
    if case.C_in == 256:
        s = Schedule(mode="table", rows_per_program=1, num_warps=1, chunk=8, prefetch_tail=True,
                     tap_masks=True, block_n=64)
        layer_kernel(case.weights, case.C_in, case.stride, s)(case.X)
    torch.cuda.synchronize()
PY
grep -E "smem_rows|sparse_table|l1tex|smsp__|Duration|Throughput|Hit Rate|Achieved Occupancy|Issued Ipc|Stall|Warp Cycles Per Issued|One or More|Busy|Bandwidth|Block Limit|Registers Per|Bank" \
    $OUT/ncu_smem.txt | head -120
