#!/usr/bin/env bash
# Issue 36's GPU checks as one script of at most ~10 minutes, on a GPU machine the code and the
# embedded models were carried to with ../shared/device/make-kit.sh (after
# `bash /tmp/kit/unpack.sh && source /tmp/kit/env.sh && cd /tmp/code`). Writes everything under
# $OUT (default ./gpu-checks): logs, the benchmarks' JSON and the evidence runs' CSVs (tar it).
#   1. the CUDA tests (about 1 minute)
#   2. GFlan's scoring paths side by side and the encoder's throughput (about 3 minutes)
#   3. gflan vs gflan-prior on frozenlake and overcooked-tomato, 3 seeds each, all in parallel
#      on the one GPU, until EVIDENCE_S seconds have passed (default 360); the runs checkpoint,
#      so a later call of this script goes on where they stopped
set -u
OUT=${OUT:-gpu-checks}
EVIDENCE_S=${EVIDENCE_S:-360}
mkdir -p "$OUT"
python -m pytest -q -m cuda tests 2>&1 | tail -20 > "$OUT/test-cuda.log"
python -m llmrl_cli.cli bench --algo gflan --config experiments/gflan.yaml --device cuda --json \
  > "$OUT/bench_gflan_cuda.json" 2> "$OUT/bench_gflan_cuda.err"
python benchmarks/encoder_speed.py --device cuda --json "$OUT/encoder_cuda.json" \
  > "$OUT/encoder_cuda.log" 2>&1
pids=()
for env in frozenlake overcooked-tomato; do
  for algo in gflan gflan-prior; do
    for seed in 0 1 2; do
      timeout "$EVIDENCE_S" python -m llmrl_cli.cli run \
        --config "results/evidence/gflan/$env.yaml" --algo "$algo" --seed "$seed" \
        --device cuda --out "$OUT/evidence" > "$OUT/run-$env-$algo-$seed.log" 2>&1 &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
python -m llmrl_cli.cli report "$OUT/evidence" --out "$OUT/evidence/report" > "$OUT/report.log" 2>&1
echo "done: $OUT"
