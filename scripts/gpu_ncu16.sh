#!/usr/bin/env bash
# One device call (~3 minutes): ncu's warp stall reasons, instruction counts and L1/L2
# traffic for the table kernel and three unrolled forms (4 and 16 warps per program) on a
# 128-channel layer at batch 8 (bench/profile_kernels.py CONV_CASES): every unrolled grid
# measured 25-30 us, so what holds them? Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
STALLS=$(for r in no_instruction long_scoreboard short_scoreboard lg_throttle mio_throttle \
    math_pipe_throttle wait not_selected selected dispatch_stall branch_resolving barrier \
    imc_miss drain tex_throttle misc sleeping membar; do
    printf "smsp__average_warps_issue_stalled_%s_per_issue_active.ratio," $r; done)
M="${STALLS}gpu__time_duration.sum,sm__inst_executed.avg.per_cycle_active,smsp__inst_executed.sum"
M="$M,sm__warps_active.avg.pct_of_peak_sustained_active,l1tex__throughput.avg.pct_of_peak_sustained_active"
M="$M,smsp__average_warp_latency_per_inst_issued.ratio,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"
M="$M,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,lts__t_sectors_srcunit_tex_op_read.sum"
M="$M,l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct,sm__cycles_active.avg"
M="$M,smsp__cycles_active.avg,dram__bytes_read.sum"
timeout ${NCU_S:-200} ncu --clock-control none --metrics "$M" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --conv > $OUT/ncu_conv16.txt 2>&1
grep -E "sparse|duration|no_instruction|long_score|inst_executed|warps_active|hit_rate" \
    $OUT/ncu_conv16.txt | tail -60
