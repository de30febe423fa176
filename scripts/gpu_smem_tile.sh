#!/usr/bin/env bash
# One device call (~5 minutes): bench/smem_tile_probe.py's GPU test, then the probe on every
# stride-1 DLMC 3x3 layer at batch 8 (fp32): the X tile in shared memory read by 8-16 rows
# side by side, in its variants (VARIANTS="P,NW,SPG,U;..." to choose), against the library's
# two one-row table schedules that won batch-8 cases, in the same call. Results under $OUT.
# Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels pytest hypothesis > /dev/null 2>&1
SPARSERT_TEST_DEVICE=cuda timeout 120 python -m pytest -q -p no:cacheprovider \
    tests/test_smem_tile_probe.py > $OUT/smem_tile_tests.txt 2>&1
tail -n 3 $OUT/smem_tile_tests.txt
T="mode='table', rows_per_program=1, num_warps=1, chunk=8, prefetch_tail=True"
S="Schedule($T, tap_masks=True, block_n=64); Schedule($T, pad_input=True, block_n=128)"
timeout ${PROBE_S:-420} python -m bench.smem_tile_probe --dlmc .carry/dlmc \
    --batch ${BATCH:-8} --only "${ONLY:-group}" --schedules "$S" --variants "${VARIANTS:-}" \
    --out $OUT/smem_tile.csv > $OUT/smem_tile.log 2>&1
tail -n 5 $OUT/smem_tile.log
python - <<'PY'
import csv, collections, os
rows = list(csv.DictReader(open(os.environ["OUT"] + "/smem_tile.csv")))
by = collections.defaultdict(dict)
for r in rows:
    by[r["layer"]][r["system"][:32]] = (r["median_us"], r["rel_err"])
for k, v in by.items():
    print(k[-28:], " | ".join(f"{s}={t[0]} ({t[1]})" for s, t in v.items()))
PY
