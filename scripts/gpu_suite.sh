#!/usr/bin/env bash
# One device call: both shards of the DLMC suite (every GEMM shape once), fp32 and fp16.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
for i in 1 2; do
  timeout 285 python -m bench.dlmc_bench --dlmc .carry/dlmc --subset full --per-shape 1 --shard $i/2 \
      --dtypes float32,float16 --tune-budget 1.5 --max-compile-s 8 --deadline-s 255 --no-progress \
      --out $OUT/dlmc_h100_shard$i.csv 2>&1 | tail -2
done
