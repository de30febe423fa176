#!/usr/bin/env bash
# One device call (~5 minutes): how fast an SM is fed straight-line code (bench/icache_probe.py:
# FFMA blocks of 8-256 KB, run once or four times, 4 and 16 warps per program), then the
# 128-channel layer at batch 8 with row groups small enough for their code to stay cached
# (8 and 4 rows: ~27 and ~16 KB of sm_90 code per group, against ~77 KB for 32 rows) run
# on one column tile per program and on two (a
# column loop: is the second pass cheaper?; and ~128 programs looping over 2-4 tiles),
# against the 32-row 16-warp form. Results and
# logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
timeout ${PROBE_S:-150} python -m bench.icache_probe --out $OUT/icache_probe_h100.csv \
    > $OUT/icache_probe.log 2>&1; tail -25 $OUT/icache_probe.log
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True, num_warps=16, block_n=512"
S="Schedule($U, rows_per_program=32)"
for R in 8 4; do
  S="$S; Schedule($U, rows_per_program=$R); Schedule($U, rows_per_program=$R, column_programs=7)"
done
# ~128 programs, each looping over 2 (8 rows) or 3-4 (4 rows) of its group's 13 column tiles
S="$S; Schedule($U, rows_per_program=8, column_programs=8); Schedule($U, rows_per_program=4, column_programs=4)"
# the same with rows grouped by shared columns (sm_90 SASS on the CPU, bench/sass_stats.py:
# 14-15% fewer X loads, 5% fewer instructions than the given order at 8 and 4 rows)
S="$S; Schedule($U, rows_per_program=8, column_programs=8, row_order='cluster')"
S="$S; Schedule($U, rows_per_program=4, column_programs=4, row_order='cluster')"
timeout ${CONV_S:-240} python -m bench.conv_bench --dlmc .carry/dlmc --batches 8 \
    --dtypes float32 --only ${LAYERS:-group2_1_1} --max-compile-s 80 --jobs ${JOBS:-5} \
    --deadline-s $(( ${CONV_S:-240} - 15 )) --out $OUT/conv_icache.csv --schedules "$S" \
    > $OUT/conv_icache.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_icache.log | cut -c1-220
