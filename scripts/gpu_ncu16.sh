#!/usr/bin/env bash
# One device call (~3 minutes): ncu's warp stall reasons, instruction counts and L1/L2
# traffic for the table kernel and three unrolled forms (4 and 16 warps per program) on a
# 128-channel layer at batch 8 (bench/profile_kernels.py CONV_CASES): every unrolled grid
# measured 25-30 us, so what holds them? Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
source scripts/ncu_metrics.sh
M="$M,l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct,sm__cycles_active.avg"
M="$M,smsp__cycles_active.avg,dram__bytes_read.sum"
timeout ${NCU_S:-200} ncu --clock-control none --metrics "$M" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --conv > $OUT/ncu_conv16.txt 2>&1
grep -E "sparse|duration|no_instruction|long_score|inst_executed|warps_active|hit_rate" \
    $OUT/ncu_conv16.txt | tail -60
