#!/usr/bin/env bash
# One device call (~5 minutes): why do more programs not speed up the unrolled convolution?
# ncu on the 128-channel layer at batch 8 (bench/profile_kernels.py FETCH_CASES: 32-row
# groups on 16 warps x 512 columns, on 8 warps x 256, in two column slices, and 8-row
# groups): warp stall reasons, issue rate, and whatever instruction-cache counters this ncu
# has (their names are looked up first and saved). Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
ncu --query-metrics > $OUT/ncu_query_metrics.txt 2>&1
ICC=$(grep -o -E "^(sm|smsp|gpc|l1tex|lts)__[a-z0-9_]*(icc|inst_cache|imc|icache|l0i|l1i|l15)[a-z0-9_]*" \
      $OUT/ncu_query_metrics.txt | sort -u | head -12 | sed 's/$/.sum/' | paste -sd, -)
echo "instruction-cache metrics: ${ICC:-none}"
source scripts/ncu_metrics.sh
timeout ${NCU_S:-200} ncu --clock-control none --metrics "$M${ICC:+,$ICC}" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --fetch > $OUT/ncu_fetch.txt 2>&1
grep -E "sparse|duration|no_instruction|long_score|inst_executed|warps_active|icc|imc" \
    $OUT/ncu_fetch.txt | tail -60
