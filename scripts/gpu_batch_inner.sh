#!/usr/bin/env bash
# One device call (~1 minute): bench/batch_inner_probe.py (SET=run1|affine|ksplit|rows) on every
# DLMC 3x3 layer at batch 8 (fp32): the batch-innermost padded copy with 128-bit X loads, in
# the set's kernel variants, against the library's two
# one-row table schedules that won batch-8 cases (tap masks x 64 columns; the padded copy x
# 128 columns) and 8 rows side by side (parallel_rows), in the same call. Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
T="mode='table', rows_per_program=1, num_warps=1, chunk=8, prefetch_tail=True"
S="Schedule($T, tap_masks=True, block_n=64); Schedule($T, pad_input=True, block_n=128)"
S="$S; Schedule(mode='table', rows_per_program=8, parallel_rows=8, num_warps=8, block_n=128, chunk=8)"
timeout ${PROBE_S:-400} python -m bench.batch_inner_probe --dlmc .carry/dlmc \
    --batch ${BATCH:-8} --only "${ONLY:-group}" --set ${SET:-rows} --schedules "$S" \
    --out $OUT/batch_inner.csv \
    > $OUT/batch_inner.log 2>&1
tail -n 5 $OUT/batch_inner.log
python - <<'PY'
import csv, collections, os
rows = list(csv.DictReader(open(os.environ["OUT"] + "/batch_inner.csv")))
by = collections.defaultdict(dict)
for r in rows:
    by[r["layer"]][r["system"][:40]] = r["median_us"]
for k, v in by.items():
    print(k[-28:], " ".join(f"{s[:22]}={t}" for s, t in v.items()))
PY
