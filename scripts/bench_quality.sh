#!/usr/bin/env bash
# Held-out quality of every method on the evaluation sets (../shared/data layout), as reported in
# docs/BENCHMARKS.md. Usage: bash scripts/bench_quality.sh DATA_ROOT TEXT_MODEL [LIMIT_SLOW]
#   TEXT_MODEL: a grounding model trained WITHOUT the held-out subjects (scripts/train_grounding.py
#   without --all), so that --subset test is honest. LIMIT_SLOW caps images for salip/unprompted.
set -euo pipefail
data=${1:?data root}; text_model=${2:?text model folder}; limit_slow=${3:-20}
declare -A prompts=([hc18]="fetal head" [busi]="breast tumour" [cxr_lungs]="left and right lungs"
                    [lgg_flair]="brain tumour" [kvasir_polyp]="polyp")
clipsam=.venv/bin/clipsam
for set in hc18 cxr_lungs busi kvasir_polyp lgg_flair; do
  p=${prompts[$set]}
  $clipsam -q eval "$data/$set" --subset test --method medclipsam --prompt "$p" \
    --text-model "$text_model" --out "runs/bench/$set-medclipsam" || true
  $clipsam -q eval "$data/$set" --subset test --method whole-box --out "runs/bench/$set-whole-box" || true
  $clipsam -q eval "$data/$set" --subset test --method gt-box --out "runs/bench/$set-gt-box" || true
  $clipsam -q eval "$data/$set" --subset test --method salip --prompt "$p" --limit "$limit_slow" \
    --text-model "$text_model" --out "runs/bench/$set-salip" || true
  $clipsam -q eval "$data/$set" --subset test --method unprompted --limit "$limit_slow" \
    --out "runs/bench/$set-unprompted" || true
done
