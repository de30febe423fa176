#!/usr/bin/env bash
# The one GPU entry point: bash scripts/gpu.sh TASK [ARGS...]
#
# Written for a device machine with torch and triton preinstalled and no network: the package
# runs from this checkout (PYTHONPATH), nothing is downloaded. Results and logs go under $OUT
# when it is set (a device call's output folder), else the benchmarks' own defaults
# (bench/results/). The DLMC set is read from $DLMC (default .carry/dlmc); Hypothesis, which
# the device image lacks, is installed from .carry/wheels when that folder exists.
#
#   tests [PYTEST ARGS]  GPU tests (SPARSERT_TEST_DEVICE=cuda). Without arguments, in two calls
#                        that each fit 10 minutes: PART=1 (default) the property and input
#                        tests, PART=2 the convolution, golden, launch and nn tests, then the
#                        gpu-marked ones
#   suite [ARGS]         the DLMC suite (every GEMM shape once, fp32 and fp16), both shards,
#                        merged into dlmc_h100.csv; then `python -m bench.report` on your machine
#   conv [ARGS]          the sparse 3x3 convolution benchmark (TESTS=1: its GPU tests first)
#   e2e [ARGS]           the end-to-end models (BERT layer, ResNet-50), dense vs sparsified
#   compile [ARGS]       compile time against nnz (sm_90, this machine's triton)
#   ncu [PATH [OPTS]]    ncu warp stalls, instructions, occupancy and L1/L2 traffic of the
#                        generated kernels of `sparsert bench PATH OPTS` (default: the bundled
#                        DLMC layer at N = 3136); `ncu -- COMMAND...` profiles any command
#   llm [ARGS]           python -m bench.llm_bench ARGS (when that benchmark exists)
#   eager [ARGS]         python -m bench.eager_bench ARGS (when that benchmark exists)
#   decoder [ARGS]       the Llama decoder end to end (transformers, Llama-2-7B width, 2 layers):
#                        dense vs sparsified per-token decode at batch 1 and 8 and a 512-token
#                        prefill, at 70% and 90%, into decoder_h100.csv and its .meta.json
#
# ARGS are passed to the benchmark after the task's defaults, so they override them
# (e.g. `bash scripts/gpu.sh conv --only group1 --dtypes float32`). Time limits in seconds:
# TEST_S, GPU_S, SUITE_S, CONV_S, E2E_S, COMPILE_S, NCU_S, DECODER_S.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SPARSERT_CACHE_DIR="${SPARSERT_CACHE_DIR:-/tmp/sparsert-gpu-cache}"
DLMC="${DLMC:-.carry/dlmc}"
R="${OUT:-bench/results}"
mkdir -p "$R"

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
task=$1; shift

need_dlmc() {
  [ -d "$DLMC" ] || { echo "gpu.sh $task: no DLMC set at $DLMC (set DLMC=DIR)" >&2; exit 2; }
}

hypothesis() {
  python3 -c "import hypothesis" 2>/dev/null && return
  [ -d .carry/wheels ] && python3 -m pip install -q --no-index --find-links .carry/wheels \
      hypothesis 2>&1 | grep -v WARNING | tail -1
}

pytest_gpu() {   # NAME LIMIT PYTEST-ARGS: the log under $OUT when set, its tail on stdout
  local name=$1 limit=$2; shift 2
  local log="${OUT:+$OUT/$name.txt}"
  SPARSERT_TEST_DEVICE=cuda timeout -s INT "$limit" python3 -m pytest -q -p no:cacheprovider \
      --durations=5 "$@" > "${log:-/tmp/$name.txt}" 2>&1
  local rc=$?
  tail -8 "${log:-/tmp/$name.txt}"
  return $rc
}

existing() {     # the test files of a list that exist in this checkout
  local f; for f in "$@"; do [ -e "$f" ] && printf '%s\n' "$f"; done
}

case "$task" in
  tests)
    hypothesis
    if [ $# -gt 0 ]; then
      pytest_gpu gpu_tests "${TEST_S:-570}" "$@"
    elif [ "${PART:-1}" = 1 ]; then
      pytest_gpu gpu_tests_property "${TEST_S:-420}" tests/test_property.py tests/test_inputs.py
    else
      mapfile -t files < <(existing tests/test_conv.py tests/test_golden.py tests/test_direct.py \
          tests/test_tap_masks.py tests/test_prefetch_x.py \
          tests/test_nn.py tests/test_nn_conv.py tests/test_ops.py)
      pytest_gpu gpu_tests_conv "${TEST_S:-300}" "${files[@]}"
      pytest_gpu gpu_tests_marked "${GPU_S:-240}" -m gpu tests
    fi
    ;;
  suite)
    need_dlmc
    limit=${SUITE_S:-285}
    for i in 1 2; do
      timeout "$limit" python3 -m bench.dlmc_bench --dlmc "$DLMC" --subset full --per-shape 1 \
          --shard $i/2 --dtypes float32,float16 --tune-budget 1.5 --max-compile-s 8 \
          --deadline-s $(( limit - 30 )) --no-progress --out "$R/dlmc_h100_shard$i.csv" "$@" 2>&1 \
          | tail -2
    done
    python3 -m bench.report --merge "$R/dlmc_h100_shard1.csv" "$R/dlmc_h100_shard2.csv" \
        --csv "$R/dlmc_h100.csv" --merge-only
    ;;
  conv)
    need_dlmc
    export SPARSERT_COMPILE_WORKERS="${SPARSERT_COMPILE_WORKERS:-16}"
    if [ "${TESTS:-0}" = 1 ]; then
      hypothesis
      pytest_gpu gpu_tests_conv "${TEST_S:-120}" tests/test_conv.py tests/test_conv_bench.py
    fi
    limit=${CONV_S:-$(( ${TESTS:-0} == 1 ? 420 : 540 ))}   # the call's 10 minutes in all
    timeout "$limit" python3 -m bench.conv_bench --dlmc "$DLMC" --batches 1,8 \
        --dtypes float32,float16 --max-compile-s 40 --deadline-s $(( limit - 30 )) \
        --out "$R/conv_h100.csv" "$@" 2>&1 | tail -40
    ;;
  e2e)
    limit=${E2E_S:-540}
    timeout "$limit" python3 -m bench.e2e --models bert,resnet50 --deadline-s $(( limit - 30 )) \
        --out "$R/e2e_h100.csv" "$@" 2>&1 | tail -20
    ;;
  decoder)
    limit=${DECODER_S:-570}
    timeout "$limit" python3 -m bench.decoder_bench --layers 2 --sparsity 0.7,0.9 --batch 1,8 \
        --deadline-s $(( limit - 60 )) --out "$R/decoder_h100.csv" "$@" 2>&1 | tail -40
    ;;
  compile)
    timeout "${COMPILE_S:-540}" python3 -m bench.compile_time --out "$R/compile_time_h100.csv" \
        "$@" 2>&1 | tail -20
    ;;
  ncu)
    # warp stall reasons per issued instruction, time, instructions, occupancy, L1/L2 traffic
    M=$(for r in no_instruction long_scoreboard short_scoreboard lg_throttle mio_throttle \
        math_pipe_throttle wait not_selected selected dispatch_stall branch_resolving barrier \
        imc_miss drain tex_throttle misc sleeping membar; do
        printf "smsp__average_warps_issue_stalled_%s_per_issue_active.ratio," $r; done)
    M="${M}gpu__time_duration.sum,sm__inst_executed.avg.per_cycle_active,smsp__inst_executed.sum"
    M="$M,sm__warps_active.avg.pct_of_peak_sustained_active,l1tex__throughput.avg.pct_of_peak_sustained_active"
    M="$M,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum"
    M="$M,l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct"
    if [ "${1:-}" = "--" ]; then
      shift; cmd=("$@")
    elif [ $# -gt 0 ]; then
      cmd=(python3 -m sparsert_triton.cli bench "$@")
    else
      cmd=(python3 -m sparsert_triton.cli bench data/bottleneck_2_block_group1_1_1.smtx.gz --n 3136)
    fi
    log="${OUT:+$OUT/ncu.txt}"; log="${log:-/tmp/ncu.txt}"
    # the generated kernels are named sparse_*; -c: the first launches only (checks, warm-up)
    timeout "${NCU_S:-300}" ncu --clock-control none --metrics "$M" -k regex:'^sparse_' \
        -c "${NCU_COUNT:-4}" "${cmd[@]}" > "$log" 2>&1
    rc=$?
    grep -E "sparse_|duration|no_instruction|long_scoreboard|inst_executed|warps_active|hit_rate" \
        "$log" | tail -60
    exit $rc
    ;;
  llm|eager)
    mod="bench.${task}_bench"
    [ -e "bench/${task}_bench.py" ] || { echo "gpu.sh $task: bench/${task}_bench.py is not in this checkout" >&2; exit 2; }
    python3 -m "$mod" "$@"
    ;;
  -h|--help|help) usage ;;
  *) echo "gpu.sh: unknown task '$task'" >&2; usage ;;
esac
