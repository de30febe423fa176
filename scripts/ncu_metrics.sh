# Sourced by the ncu device scripts: M, the metric list (warp stall reasons per issue,
# duration, instructions, occupancy, L1/L2 traffic) passed to `ncu --metrics "$M"`.
STALLS=$(for r in no_instruction long_scoreboard short_scoreboard lg_throttle mio_throttle \
    math_pipe_throttle wait not_selected selected dispatch_stall branch_resolving barrier \
    imc_miss drain tex_throttle misc sleeping membar; do
    printf "smsp__average_warps_issue_stalled_%s_per_issue_active.ratio," $r; done)
M="${STALLS}gpu__time_duration.sum,sm__inst_executed.avg.per_cycle_active,smsp__inst_executed.sum"
M="$M,sm__warps_active.avg.pct_of_peak_sustained_active,l1tex__throughput.avg.pct_of_peak_sustained_active"
M="$M,smsp__average_warp_latency_per_inst_issued.ratio,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"
M="$M,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,lts__t_sectors_srcunit_tex_op_read.sum"
