#!/usr/bin/env bash
# One device call (~5 minutes): is the unrolled code held back by running as several kernels
# one after another? With max_functions_per_kernel=8 a layer's smaller row groups (or column
# slices) are cut into several kernels of 26-52 programs each, launched in turn, so most SMs
# idle (ncu in the tenth session: grids of 13 x 2). The same schedules with every group in
# one kernel (max_functions_per_kernel=256): more programs at once, each with less code.
# 64- and 128-channel layers at batch 8, 16 warps x 512 columns. Results under $OUT.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
V="mode='values', max_statements_per_function=16384, pad_input=True, num_warps=16, block_n=512"
U="$V, max_functions_per_kernel=256"
S="Schedule($V, max_functions_per_kernel=8, rows_per_program=32)"
S="$S; Schedule($V, max_functions_per_kernel=8, rows_per_program=8)"
S="$S; Schedule($V, max_functions_per_kernel=8, rows_per_program=32, split_k=2)"
S="$S; Schedule($U, rows_per_program=32, split_k=2); Schedule($U, rows_per_program=32, split_k=4)"
S="$S; Schedule($U, rows_per_program=16); Schedule($U, rows_per_program=16, split_k=2)"
S="$S; Schedule($U, rows_per_program=8); Schedule($U, rows_per_program=4)"
timeout ${CONV_S:-400} python -m bench.conv_bench --dlmc .carry/dlmc --batches ${BATCHES:-8} \
    --dtypes float32 --only ${LAYERS:-group1_1_1,group2_1_1} --max-compile-s 200 \
    --jobs ${JOBS:-7} --deadline-s $(( ${CONV_S:-400} - 15 )) --out $OUT/conv_one_kernel.csv \
    --schedules "$S" > $OUT/conv_one_kernel.log 2>&1
python - <<'PY'
import json, os
for l in open(os.environ["OUT"] + "/conv_one_kernel_tune.jsonl"):
    r = json.loads(l)
    print(r["layer"][-12:], r["batch"], r.get("median_us"), r.get("build_s"),
          r["schedule"].replace("mode='values', ", "")[9:140], r.get("error", "")[:80])
PY
