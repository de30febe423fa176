#!/usr/bin/env bash
# One device call (~4 minutes): the L1 probe, then ncu's warp stall reasons, instruction counts and L1/L2
# traffic for the table kernel and three unrolled forms (4 and 16 warps per program) on a
# 128-channel layer at batch 8 (bench/profile_kernels.py CONV_CASES): every unrolled grid
# measured 25-30 us, so what holds them? Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
# (0) seconds: L1 cost of aligned, misaligned and row-broken warp loads (bench/l1_probe.py)
timeout 60 python -m bench.l1_probe --out $OUT/l1_probe_h100.csv 2>&1 | tail -15
source scripts/ncu_metrics.sh
timeout ${NCU_S:-150} ncu --clock-control none --metrics "$M" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --conv > $OUT/ncu_conv16.txt 2>&1
grep -E "sparse|duration|no_instruction|long_score|inst_executed|warps_active" \
    $OUT/ncu_conv16.txt | tail -40
# L1 wavefronts per X load (an unaligned 128-byte warp load spans two lines: the unrolled
# code's loads would then cost two L1 cycles each), hit rates, cycles: a second run, so that
# a metric this ncu lacks costs only this part
X="l1tex__data_pipe_lsu_wavefronts.sum,l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct"
X="$X,sm__cycles_active.avg,smsp__cycles_active.avg,dram__bytes_read.sum,gpu__time_duration.sum"
X="$X,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,smsp__inst_executed_op_global_ld.sum"
timeout ${NCU2_S:-120} ncu --clock-control none --metrics "$X" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --conv > $OUT/ncu_conv16_l1.txt 2>&1
grep -E "sparse|wavefronts|hit_rate|requests|duration" $OUT/ncu_conv16_l1.txt | tail -40
