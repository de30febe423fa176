#!/usr/bin/env bash
# One device call: one shard of the DLMC suite (every GEMM shape once: --per-shape 1),
# all four sparsities, fp32 and fp16. SHARD=i/n selects the shard (results under $OUT).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout ${DLMC_S:-540} python -m bench.dlmc_bench --dlmc .carry/dlmc --subset full --per-shape 1 \
    --shard ${SHARD:-1/1} --dtypes float32,float16 --tune-budget ${TUNE_S:-2} --max-compile-s 8 \
    --deadline-s $(( ${DLMC_S:-540} - 60 )) --no-progress --out $OUT/dlmc_h100.csv 2>&1 | tail -25
